"""The wheel: `pip wheel .` builds it, it installs into a fresh virtual environment, and its
`headmap` command works from a folder outside the checkout (issue 16).

How, and why it is honest and fast (about 15 s):

* The wheel is built from a copy of the checkout's files (tracked and not ignored, as git lists
  them; otherwise the files on disk but ``.venv``, ``.git`` and caches), so ``build/`` and
  ``*.egg-info`` never land in the checkout. ``pip wheel --no-deps --no-build-isolation`` uses the
  setuptools of the test's own environment (pinned in constraints.txt): no network.
* The fresh environment is a new ``python -m venv``; the wheel is installed into it with
  ``pip install --no-deps --no-index``. Its dependencies are *reused* from the test's own
  environment (the project's pinned versions: torch 2.13.0 alone is gigabytes) through one ``.pth``
  line that appends that site-packages to the new one's ``sys.path``. Such a path is not a site
  directory, so the ``.pth`` files inside it (the editable install that points at the checkout)
  are not run: ``headmap``, ``analysis`` and ``gui`` can only come from the wheel, which the
  test asserts, together with the wheel's own metadata and that every dependency it declares
  is installed at a version it allows.
* The commands run with the current folder set to a temporary folder, never the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
_SKIP = {".venv", ".git", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis", "shots", ".mypy_cache",
         ".ruff_cache"}


def _copy_sources(dest: Path) -> None:
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                                capture_output=True).stdout.decode().split("\0")
        files = [f for f in listed if f and (ROOT / f).is_file()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: copy what is there
        files = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                 if p.is_file() and not _SKIP & set(p.relative_to(ROOT).parts) and not p.name.endswith(".egg-info")]
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)


def _run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv folder, its python, its headmap command, the wheel) — built and installed once."""
    base = tmp_path_factory.mktemp("wheel")
    src, dist, venv = base / "src", base / "dist", base / "venv"
    src.mkdir()
    _copy_sources(src)
    quiet = ["--disable-pip-version-check", "-q"]
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", *quiet, "-w", str(dist), "."], src)
    (wheel,) = dist.glob("headmap-*.whl")
    _run([sys.executable, "-m", "venv", str(venv)], base)
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", *quiet, str(wheel)], base)
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "headmap-reused-deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    return venv, py, venv / "bin" / "headmap", wheel


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def test_the_wheel_holds_the_api_the_packages_and_the_teaching_translators(installed):
    *_, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("headmap.py", "analysis/cli.py", "analysis/views/heatmap.py", "analysis/toy_translation/train.py",
                   "gui/app.py", "gui/tabs/stats.py", "gui/views/head.py",
                   "analysis/bundled_models/translator-en-fr/model.safetensors",
                   "analysis/bundled_models/translator-en-ko/tokenizer.json"):
        assert needed in names, needed
    assert not any(n.startswith(("tests/", "main.py", "benchmarks/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "headmap = headmap:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_headmap_command_from_the_wheel_outside_the_checkout(installed, tmp_path):
    venv, py, command, _ = installed
    env = _env()
    # everything comes from the new environment, and every declared dependency is satisfied
    check = (
        "import headmap, analysis, gui, importlib.metadata as md\n"
        "from packaging.requirements import Requirement\n"
        "print(headmap.__file__); print(analysis.__file__); print(gui.__file__)\n"
        "dist = md.distribution('headmap'); print(dist.locate_file(''))\n"
        "for r in map(Requirement, dist.requires or []):\n"
        "    if r.marker is None or r.marker.evaluate({'extra': ''}):\n"
        "        v = md.version(r.name)\n"
        "        assert r.specifier.contains(v, prereleases=True), (r, v)\n"
    )
    res = _run([str(py), "-c", check], tmp_path, env)
    for line in res.stdout.split():
        assert Path(line).resolve().is_relative_to(venv.resolve()), res.stdout
        assert not Path(line).resolve().is_relative_to(ROOT), res.stdout

    res = _run([str(command), "--help"], tmp_path, env)
    assert res.stdout.startswith("usage: headmap")
    assert "--export-npz" in res.stdout and "--open-session" in res.stdout and "--quiet" in res.stdout

    # one export, from the bundled teaching translator inside the wheel
    res = _run([str(command), "--model", "bundled:translator-en-fr", "--text", "I like this course",
                "--export-npz", "x.npz", "--export-alignment", "x.txt"], tmp_path, env)
    assert res.stderr == ""  # not a terminal: no progress
    with np.load(tmp_path / "x.npz", allow_pickle=False) as z:
        assert str(z["output_text"]) == "j'aime ce cours"
        assert z["cross_attentions"].ndim == 4
    assert (tmp_path / "x.txt").read_text().strip()

    # the same one-line errors and exit codes as python main.py
    res = subprocess.run([str(command), "--model", "bundled:nope", "--text", "x", "--export-npz", "y.npz"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: there is no bundled model called 'nope'")
    assert not (tmp_path / "y.npz").exists()
