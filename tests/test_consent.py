"""Consent to run a checkpoint's own code belongs to one checkpoint and its code as it was agreed to.

Each test builds its own remote-code folders (the repository's code leaves a marker file when it
runs), so the markers tell exactly whose code ran.
"""

from __future__ import annotations

import json
import os

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from analysis.consent import (
    CodeConsent,
    ConsentBook,
    canonical_reference,
    code_fingerprint,
    local_consent,
)
from analysis.errors import ModelLoadError, RemoteCodeError
from analysis.loader import load_model
from tests.gui_fixtures import wait_idle
from tests.tiny_models import REMOTE_CODE_MARKER, build_broken


@pytest.fixture
def remote(tmp_path, tiny_model_dir):
    """Factory ``remote(name) -> Path``: a fresh remote-code checkpoint folder under tmp_path."""

    def make(name: str):
        return build_broken("remote-code", tmp_path / name, tiny_model_dir("bert"))

    return make


def ran(folder) -> bool:
    return (folder / REMOTE_CODE_MARKER).exists()


def edit_code(folder) -> None:
    p = folder / "modeling_custom.py"
    p.write_text(p.read_text(encoding="utf-8") + "\nEXTRA = 1  # a changed code file\n", encoding="utf-8")


# -- the fingerprint ---------------------------------------------------------------------------
def test_fingerprint_changes_with_any_code_file_and_the_auto_map(remote):
    a = remote("a")
    digest, files = code_fingerprint(a)
    assert files == ("configuration_custom.py", "modeling_custom.py")
    assert code_fingerprint(a)[0] == digest  # stable
    edit_code(a)
    edited = code_fingerprint(a)[0]
    assert edited != digest
    (a / "helpers").mkdir()
    (a / "helpers" / "extra.py").write_text("X = 1\n", encoding="utf-8")
    assert "helpers/extra.py" in code_fingerprint(a)[1] and code_fingerprint(a)[0] != edited
    with_helper = code_fingerprint(a)[0]
    cfg = json.loads((a / "config.json").read_text(encoding="utf-8"))
    cfg["auto_map"]["AutoModel"] = "configuration_custom.CustomConfig"
    (a / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    assert code_fingerprint(a)[0] != with_helper


def test_canonical_reference_is_one_spelling_per_folder(remote, tmp_path, monkeypatch):
    a = remote("a")
    link = tmp_path / "link"
    link.symlink_to(a, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    assert canonical_reference("a") == canonical_reference(str(link)) == canonical_reference(f" {a}/ ") == str(a.resolve())
    assert canonical_reference("org/model") == "org/model" and canonical_reference("bundled:minilm") == "bundled:minilm"
    book = ConsentBook()
    book.grant(local_consent(str(link)))
    assert book.get("a") is not None and book.get(str(remote("b"))) is None
    book.revoke("./a")
    assert book.get(str(a)) is None


# -- the loader ------------------------------------------------------------------------------------
def test_consent_for_one_folder_does_not_run_another(remote):
    a, b = remote("a"), remote("b")
    consent = local_consent(str(a))
    lm = load_model(str(a), trust_remote_code=consent, device="cpu")
    assert type(lm.model).__name__ == "HeadmapCustomModel" and ran(a)

    with pytest.raises(RemoteCodeError, match="consent you gave was for .*covers one model") as info:
        load_model(str(b), trust_remote_code=consent, device="cpu")
    assert not ran(b), "a consent given for one folder ran another folder's code"
    req = info.value.request
    assert req.reference == str(b.resolve()) and req.files == ("configuration_custom.py", "modeling_custom.py")
    assert req.code_sha256 == code_fingerprint(b)[0]
    # the request is exactly what it takes
    load_model(str(b), trust_remote_code=req, device="cpu")
    assert ran(b)


def test_a_changed_code_file_needs_consent_again(remote):
    a = remote("a")
    consent = local_consent(str(a))
    edit_code(a)
    with pytest.raises(RemoteCodeError, match="changed since you allowed it") as info:
        load_model(str(a), trust_remote_code=consent, device="cpu")
    assert not ran(a)
    assert info.value.request.code_sha256 == code_fingerprint(a)[0] != consent.code_sha256


def test_consent_before_the_code_was_seen_asks_with_the_files(remote):
    a = remote("a")
    pending = CodeConsent(canonical_reference(str(a)), None)
    with pytest.raises(RemoteCodeError, match="needs to run these code files: configuration_custom.py, modeling_custom.py"):
        load_model(str(a), trust_remote_code=pending, device="cpu")
    assert not ran(a)


def test_cli_flag_is_consent_for_the_model_given(remote):
    a = remote("a")
    with pytest.raises(RemoteCodeError, match="--trust-remote-code") as info:
        load_model(str(a), device="cpu")
    assert info.value.request is not None and not ran(a)
    load_model(str(a), trust_remote_code=True, device="cpu")
    assert ran(a)


def test_code_from_another_repository_is_refused_even_with_the_flag(remote):
    a = remote("a")
    cfg = json.loads((a / "config.json").read_text(encoding="utf-8"))
    cfg["auto_map"]["AutoModel"] = "evil-org/payload--modeling_payload.Model"
    (a / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="code from another repository \\(evil-org/payload\\)"):
        load_model(str(a), trust_remote_code=True, device="cpu")
    assert not ran(a)


# -- the window ------------------------------------------------------------------------------------
def answer(qtbot, win, button) -> None:
    box = win._dialog
    assert box is not None and box.isVisible()
    box.button(button).click()
    qtbot.wait(10)


def test_window_consent_does_not_carry_over_to_another_model(qtbot, window, remote):
    a, b = remote("a"), remote("b")
    window.input_panel.text.setPlainText("")
    window.model_panel.set_reference(str(a))
    qtbot.mouseClick(window.model_panel.trust, Qt.MouseButton.LeftButton)
    assert str(a) in window._dialog.text() and "modeling_custom.py" in window._dialog.text()
    answer(qtbot, window, QMessageBox.StandardButton.Yes)
    assert window.model_panel.trust.isChecked()
    window.load_model(str(a))
    wait_idle(qtbot, window)
    assert window.lm is not None and window.lm.reference == str(a) and ran(a), window.last_error

    # another folder: the box shows no consent, and loading it asks about it (not about a)
    window.model_panel.set_reference(str(b))
    assert not window.model_panel.trust.isChecked()
    window.load_model(str(b))
    wait_idle(qtbot, window)
    assert not ran(b), "the consent given for one model ran another model's code"
    box = window._dialog
    assert box.isVisible() and str(b.resolve()) in box.text() and "modeling_custom.py" in box.text()
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.No)
    answer(qtbot, window, QMessageBox.StandardButton.No)
    wait_idle(qtbot, window)
    assert not ran(b) and window.lm.reference == str(a)
    # declined: the box names the model still loaded, a, whose consent it shows
    assert window.model_panel.reference() == str(a) and window.model_panel.trust.isChecked()
    window.model_panel.set_reference(str(b))
    assert not window.model_panel.trust.isChecked()

    # b after Yes loads
    window.load_model(str(b))
    wait_idle(qtbot, window)
    answer(qtbot, window, QMessageBox.StandardButton.Yes)
    wait_idle(qtbot, window)
    assert ran(b) and window.lm.reference == str(b), window.last_error
    assert window.model_panel.trust.isChecked()


def test_window_asks_again_when_the_code_changed(qtbot, window, remote):
    a = remote("a")
    window.input_panel.text.setPlainText("")
    window.model_panel.set_reference(str(a))
    qtbot.mouseClick(window.model_panel.trust, Qt.MouseButton.LeftButton)
    answer(qtbot, window, QMessageBox.StandardButton.Yes)
    edit_code(a)
    window.load_model(str(a))
    wait_idle(qtbot, window)
    assert not ran(a), "changed code ran under the consent given for the old code"
    assert "changed since you allowed it" in window._dialog.text()
    answer(qtbot, window, QMessageBox.StandardButton.Yes)
    wait_idle(qtbot, window)
    assert ran(a) and window.lm is not None and window.lm.reference == str(a), window.last_error


def test_unticking_withdraws_the_consent(qtbot, window, remote):
    a = remote("a")
    window.model_panel.set_reference(str(a))
    qtbot.mouseClick(window.model_panel.trust, Qt.MouseButton.LeftButton)
    answer(qtbot, window, QMessageBox.StandardButton.Yes)
    qtbot.mouseClick(window.model_panel.trust, Qt.MouseButton.LeftButton)
    assert window.consents.get(str(a)) is None
    window.input_panel.text.setPlainText("")
    window.load_model(str(a))
    wait_idle(qtbot, window)
    assert not ran(a) and window._dialog.isVisible() and window.lm is None
    answer(qtbot, window, QMessageBox.StandardButton.No)


def test_cli_trust_flag_runs_only_the_model_given(remote, tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    a = remote("a")
    out = tmp_path / "a.npz"
    env = dict(os.environ, HEADMAP_IN_PROCESS="1")
    res = subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), "--model", str(a), "--text", "hi there",
                          "--trust-remote-code", "--export-npz", str(out)], capture_output=True, text=True, env=env,
                         cwd=REPO_ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    assert ran(a) and out.exists()
