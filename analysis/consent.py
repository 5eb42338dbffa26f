"""Consent to run a checkpoint's own Python code, given for one checkpoint and its code.

A checkpoint whose config names an architecture transformers does not know carries Python files
(``auto_map`` in config.json) that transformers imports when ``trust_remote_code`` is on. Running
them is running a stranger's program, so the consent is narrow: a :class:`CodeConsent` names one
checkpoint (its canonical reference) and the sha256 of its code files. Loading another checkpoint,
or the same one after a code file changed, needs a new consent (:func:`check_remote_code` raises
a :class:`~analysis.errors.RemoteCodeError` whose ``request`` is the consent to ask for).

The CLI's ``--trust-remote-code`` is ``trust=True``: it applies to the one ``--model`` of that
invocation. Code that the config fetches from *another* repository (``"org/repo--module.Class"``)
is refused either way: its contents are not in the folder, so no consent could cover them.

Pure Python, no Qt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelLoadError, RemoteCodeError


@dataclass(frozen=True)
class CodeConsent:
    """The user's consent to run the code of one checkpoint.

    ``reference``: :func:`canonical_reference` of the model reference; ``code_sha256``: the
    :func:`code_fingerprint` the user agreed to, or ``None`` while the code is not on this machine
    yet (a hub model not in the cache): the loader then asks again with the real files before
    anything runs. ``files``: the code files' names, for the question shown to the user.
    """

    reference: str
    code_sha256: str | None
    files: tuple[str, ...] = ()


def canonical_reference(ref: str) -> str:
    """One spelling per checkpoint: an existing path becomes absolute and resolved (symlinks,
    ``~``, ``..``); hub ids and ``bundled:`` names stay as given (stripped)."""
    ref = (ref or "").strip()
    if not ref or ref.startswith("bundled:"):
        return ref
    p = Path(ref).expanduser()
    try:
        if p.exists():
            return str(p.resolve())
    except OSError:
        pass
    return ref


def _auto_map(folder: Path) -> dict:
    try:
        raw = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    auto = raw.get("auto_map") if isinstance(raw, dict) else None
    return auto if isinstance(auto, dict) else {}


def _auto_map_targets(auto: dict) -> list[str]:
    out: list[str] = []
    for v in auto.values():
        out.extend(x for x in (v if isinstance(v, list | tuple) else [v]) if isinstance(x, str))
    return out


def code_files(folder: Path) -> list[Path]:
    """The Python files of a checkpoint folder (recursively, sorted; caches and hidden folders skipped)."""
    folder = Path(folder)
    out = []
    for p in folder.rglob("*.py"):
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") or part == "__pycache__" for part in rel[:-1]):
            continue
        if p.is_file():
            out.append(p)
    return sorted(out, key=lambda p: p.relative_to(folder).as_posix())


def code_fingerprint(folder: Path) -> tuple[str, tuple[str, ...]]:
    """sha256 over every code file (name and contents) and the config's ``auto_map``.

    Returns ``(hex digest, file names relative to the folder)``. Any edit to a code file, a new or
    removed one, or a config that points at other classes gives another digest.
    """
    folder = Path(folder)
    h = hashlib.sha256()
    h.update(json.dumps(_auto_map(folder), sort_keys=True).encode())
    names = []
    for p in code_files(folder):
        name = p.relative_to(folder).as_posix()
        names.append(name)
        h.update(b"\0file\0" + name.encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest(), tuple(names)


def consent_request(ref: str, folder: Path) -> CodeConsent:
    """The consent that loading ``ref`` (resolved to ``folder``) needs."""
    digest, files = code_fingerprint(folder)
    return CodeConsent(canonical_reference(ref), digest, files)


def local_consent(ref: str) -> CodeConsent:
    """Consent for ``ref`` as it is on disk now (a folder: its code hashed); for a hub id or
    anything not on this machine, a consent whose code is still to be seen (``code_sha256=None``)."""
    canon = canonical_reference(ref)
    p = Path(canon)
    if not canon.startswith("bundled:") and p.is_dir() and (p / "config.json").exists():
        return consent_request(canon, p)
    return CodeConsent(canon, None)


def check_remote_code(ref: str, folder: Path, needs_code: bool, trust: bool | CodeConsent | None) -> bool:
    """Decide whether the checkpoint's code may run; return the ``trust_remote_code`` flag for
    transformers.

    ``trust``: ``True`` (the CLI flag, for this one reference), a :class:`CodeConsent` (the window)
    or ``False``/``None``. Raises :class:`RemoteCodeError` with ``request`` set to the consent to
    ask for when the code may not run; :class:`ModelLoadError` when the config fetches code from
    another repository.
    """
    if not needs_code:
        return False
    foreign = sorted({t.split("--", 1)[0] for t in _auto_map_targets(_auto_map(folder)) if "--" in t})
    if foreign:
        raise ModelLoadError(
            f"{ref} asks to run code from another repository ({', '.join(foreign)}), which no consent can cover; "
            "copy that code into the checkpoint folder and point its config.json auto_map at the local files"
        )
    if trust is True:
        return True
    request = consent_request(ref, folder)
    files = ", ".join(request.files) or "no .py files"
    digest = request.code_sha256 or ""  # always set: consent_request hashes the folder
    if isinstance(trust, CodeConsent):
        if trust.reference != request.reference:
            msg = (f"{ref} needs custom Python code ({files}) and the consent you gave was for {trust.reference}; "
                   "consent covers one model — allow this one's code only if you trust its author")
        elif trust.code_sha256 is None:
            msg = (f"{ref} needs to run these code files: {files} (sha256 {digest[:12]}…); "
                   "confirm to run them")
        elif trust.code_sha256 != request.code_sha256:
            msg = (f"the code of {ref} ({files}) changed since you allowed it; "
                   "allow it again only if you trust the new code")
        else:
            return True
    else:
        msg = (f"{ref} needs custom Python code from its repository to run ({files}); Headmap never runs code you "
               "did not agree to — enable trust_remote_code (CLI: --trust-remote-code) only if you trust its author")
    err = RemoteCodeError(msg)
    err.request = request
    raise err


class ConsentBook:
    """The consents given in one window session, at most one per checkpoint (never saved)."""

    def __init__(self) -> None:
        self._by_ref: dict[str, CodeConsent] = {}

    def get(self, ref: str) -> CodeConsent | None:
        """The consent for ``ref`` (any spelling of the same path), or ``None``."""
        return self._by_ref.get(canonical_reference(ref))

    def grant(self, consent: CodeConsent) -> None:
        self._by_ref[consent.reference] = consent

    def revoke(self, ref: str) -> None:
        self._by_ref.pop(canonical_reference(ref), None)
