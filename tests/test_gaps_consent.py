"""analysis.consent: behaviours no other test reached. A reference whose path cannot be checked
stays as given; a config.json that cannot be read, is not JSON or is no object counts as no
``auto_map`` in the code fingerprint; code files in hidden folders and caches, and folders named
like Python files, are not part of it."""

from __future__ import annotations

import pytest

from analysis.consent import canonical_reference, code_files, code_fingerprint


def test_a_reference_too_long_to_be_a_path_stays_as_given():
    ref = "m" * 300  # a name longer than any file system allows: checking it raises OSError
    assert canonical_reference(f"  {ref} ") == ref


@pytest.mark.parametrize("config", [None, "{not json", "[1, 2]", '{"auto_map": ["a.B"]}', '{"auto_map": null}'])
def test_a_config_without_a_readable_auto_map_fingerprints_as_no_auto_map(tmp_path, config):
    plain, other = tmp_path / "plain", tmp_path / "other"
    for folder in (plain, other):
        folder.mkdir()
        (folder / "model.py").write_text("x = 1\n")
    (plain / "config.json").write_text("{}")
    if config is not None:
        (other / "config.json").write_text(config)
    assert code_fingerprint(other) == code_fingerprint(plain)
    (plain / "config.json").write_text('{"auto_map": {"AutoModel": "model.M"}}')
    assert code_fingerprint(other) != code_fingerprint(plain)


def test_code_in_hidden_folders_caches_and_folders_named_like_files_is_left_out(tmp_path):
    """Hidden *folders* (.git) and caches are skipped; a hidden code file itself is code and counts."""
    for rel in ("a.py", "sub/z.py", ".git/hook.py", "__pycache__/a.py", "sub/.cache/b.py", "sub/__pycache__/c.py",
                "sub/.private.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("pass\n")
    (tmp_path / "pkg.py").mkdir()
    (tmp_path / "pkg.py" / "inner.py").write_text("pass\n")
    expected = ["a.py", "pkg.py/inner.py", "sub/.private.py", "sub/z.py"]
    assert [p.relative_to(tmp_path).as_posix() for p in code_files(tmp_path)] == expected
    assert code_fingerprint(tmp_path)[1] == tuple(expected)
