"""Shared pytest fixtures.

Sections (append new ones at the end, each under its own banner):

1. environment   – offline, headless Qt, quiet libraries (set before anything imports them)
2. tiny models   – checkpoints built on disk once per session (``tests/tiny_models.py``)
3. bundled       – the real bundled models (tests using them are marked ``bundled``)
4. window        – the window fixtures of ``tests/gui_fixtures.py``, registered here once
5. mutmut        – child processes under ``make mutation`` (benchmarks/mutation.py)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# ============================================================================================
# 1. environment
# ============================================================================================
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# nothing in the test suite may download: the loader must answer from disk or fail fast
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# trust_remote_code tests copy a fixture's own modules into transformers' module cache: keep that
# out of the user's ~/.cache (read by transformers at import time, so it is set here)
if "HF_MODULES_CACHE" not in os.environ:
    _modules_cache = tempfile.mkdtemp(prefix="headmap-hf-modules-")
    os.environ["HF_MODULES_CACHE"] = _modules_cache
    atexit.register(shutil.rmtree, _modules_cache, True)
# HEADMAP_CACHE is deliberately left alone: the bundled SmolLM2 is dequantized once (~20 s) into
# the user's cache (~/.cache/headmap) and reused by every later run of the suite.

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """This test's own ``HEADMAP_CACHE`` (stores of long captures, derived copies), under
    ``tmp_path``; a module whose every test writes stores uses it for all of them with
    ``pytestmark = pytest.mark.usefixtures("own_cache")``."""
    monkeypatch.setenv("HEADMAP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def without_proc(monkeypatch):
    """:mod:`analysis.host` as on macOS: ``sys.platform`` is ``darwin`` and ``/proc`` cannot be
    opened. Returns ``fake_ps(state)``: ``subprocess.run`` answers as ``ps`` printing ``state`` (a
    state letter) from then on, and the returned list records each call."""
    import subprocess
    from types import SimpleNamespace

    import analysis.host as host

    def no_proc(*a, **k):
        raise FileNotFoundError("/proc")

    monkeypatch.setattr(host, "open", no_proc, raising=False)
    monkeypatch.setattr(host, "sys", SimpleNamespace(platform="darwin"))

    def fake_ps(state: str) -> list:
        calls: list = []

        def ps(*a, **k):
            calls.append(a)
            return SimpleNamespace(stdout=f"{state}\n")

        monkeypatch.setattr(subprocess, "run", ps)
        return calls

    return fake_ps


# ============================================================================================
# 2. tiny models
# ============================================================================================
@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Factory ``tiny_model_dir(arch) -> Path``: a tiny checkpoint folder, built once per session.

    ``arch`` is one of :data:`tests.tiny_models.ARCHS`. Treat the folder as read-only; copy it
    (``shutil.copytree``) before changing anything.
    """
    from tests.tiny_models import build_tiny

    built: dict[str, Path] = {}

    def make(arch: str) -> Path:
        if arch not in built:
            built[arch] = build_tiny(arch, tmp_path_factory.mktemp(f"tiny-{arch}"))
        return built[arch]

    return make


@pytest.fixture(scope="session")
def loaded(tiny_model_dir):
    """Factory ``loaded(arch) -> LoadedModel``: ``load_model(folder, device="cpu")`` of a tiny
    checkpoint, cached for the session. On the CPU on every machine, so its maps compare exactly with
    direct CPU calls of the model. Shared between tests: never modify the returned model (load a
    fresh one to monkeypatch it)."""
    from analysis.loader import load_model

    cache: dict[str, object] = {}

    def get(arch: str):
        if arch not in cache:
            with shared_calls(("loaded", arch)):
                cache[arch] = load_model(str(tiny_model_dir(arch)), device="cpu")
        else:
            credit_shared(("loaded", arch))
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def broken_dir(tmp_path_factory, tiny_model_dir):
    """Factory ``broken_dir(kind) -> Path``: a broken copy of the tiny BERT checkpoint
    (kinds: :data:`tests.tiny_models.BROKEN_KINDS`), built once per session."""
    from tests.tiny_models import build_broken

    built: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in built:
            built[kind] = build_broken(kind, tmp_path_factory.mktemp("broken") / kind, tiny_model_dir("bert"))
        return built[kind]

    return make


# ============================================================================================
# 3. bundled models (mark tests that use these ``@pytest.mark.bundled``)
# ============================================================================================
@pytest.fixture(scope="session")
def bundled_minilm():
    """``load_model("bundled:minilm", device="cpu")`` – the real all-MiniLM-L6-v2 (BERT, 6 × 12)."""
    from analysis.loader import load_model

    return load_model("bundled:minilm", device="cpu")


@pytest.fixture(scope="session")
def bundled_smollm2():
    """``load_model("bundled:smollm2", device="cpu")`` – the real SmolLM2-135M-Instruct (Llama, 30 × 9),
    dequantized once into the user's Headmap cache."""
    from analysis.loader import load_model

    return load_model("bundled:smollm2", device="cpu")


# ============================================================================================
# 4. window fixtures (``window``, ``make_window``, ``settings_path``, ``one_torch_thread``)
# ============================================================================================
# Registered once for every test module. pytest accepts ``pytest_plugins`` only in a conftest it
# loads before collection: this one always is, since it sits in the ``tests`` folder named by
# ``testpaths`` and in every path a test run names (pytest also loads ``test*/conftest.py``
# below a folder given on the command line). Test modules import only the plain helpers
# (``load``, ``run``, ``wait_idle``, ...) from ``tests.gui_fixtures``.
pytest_plugins = ["tests.gui_fixtures"]


# ============================================================================================
# 5. mutmut (``make mutation``: benchmarks/mutation.py)
# ============================================================================================
# mutmut tells its trampolines (the mutated copy of analysis/ in build/mutation/mutants/) what to
# run through MUTANT_UNDER_TEST: a mutant's name ("analysis.masks.x_f__mutmut_3"), or one of its
# own modes ("stats" while it learns which tests cover which function, "fail" for its check that a
# failing function fails a test, ...). A test's child Python process (the CLI, a fresh interpreter,
# the model process) inherits the variable and imports the same mutated copy (``PYTHONPATH=ROOT``).
# A mutant's name is right there: the child runs the mutant, so subprocess tests kill mutants too.
# The modes are not: in "stats" the child's trampoline records the call into mutmut's statistics,
# which needs mutmut's configuration read from the *child's* working folder (a tmp_path: "Could not
# figure out where the code to mutate is", the child fails and so does mutmut's stats step), and
# whatever it recorded dies with the child anyway. So while a mode runs, the variable is taken out
# of the environment for the whole session: the children run the plain code, and this process's
# trampolines still see the mode through mutmut's process-local copy of it, which they fall back
# on when the variable is absent (mutmut.mutation.trampoline.get_mutant_under_test).
def _is_mutant_name(value: str) -> bool:
    return "__mutmut_" in value


@pytest.fixture(scope="session", autouse=True)
def _mutmut_children_run_mutants_only():
    mode = os.environ.get("MUTANT_UNDER_TEST")
    if mode is None or _is_mutant_name(mode):  # a normal test run, or a mutant's
        yield
        return
    from mutmut.mutation import trampoline

    trampoline.set_mutant_under_test(mode)  # the process-local copy this process keeps using
    del os.environ["MUTANT_UNDER_TEST"]
    try:
        yield
    finally:
        os.environ["MUTANT_UNDER_TEST"] = mode


def pytest_collection_modifyitems(config, items):
    """While mutmut tests a mutant, run the quickest test files first.

    mutmut hands a mutant's covering tests to pytest as a set (in no useful order) and stops at the
    first failure (``-x``): a mutant that a quick unit test kills would otherwise often run minutes
    of CLI and window tests first. The files are ordered by the time their selected tests took in
    mutmut's statistics run (``mutmut-stats.json`` in its working folder); a file's own order is
    kept (its module fixtures are set up once). Normal test runs are left alone.
    """
    mode = os.environ.get("MUTANT_UNDER_TEST", "")
    stats = Path("mutmut-stats.json")
    if not _is_mutant_name(mode) or not stats.is_file():
        return
    try:
        durations = json.loads(stats.read_text(encoding="utf-8")).get("duration_by_test", {})
    except (OSError, ValueError):
        return
    per_file: dict[str, float] = {}  # insertion order: the order the files came in
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        per_file[path] = per_file.get(path, 0.0) + float(durations.get(item.nodeid, 1.0))
    rank = {path: i for i, path in enumerate(sorted(per_file, key=per_file.__getitem__))}  # stable sort
    items.sort(key=lambda item: rank[item.nodeid.split("::", 1)[0]])


# mutmut's statistics run (``MUTANT_UNDER_TEST=stats``) learns which tests cover each function of
# analysis/ by what each test calls; a mutant then runs only those tests. Work shared between tests
# would be credited to the first test alone: a module- or session-scoped fixture (the figure goldens'
# drawings, a padding report, a CLI run) runs during the first test that asks for it, and a cached
# model loads during the first test that calls ``loaded(arch)``. The other tests check what that
# work produced, yet a mutant of it would not run them (the golden comparison, every test of a
# padded batch, every test that uses a tiny model after the first). So the calls made by shared work
# are kept apart and credited to every test that uses it.
_STATS_RUN = os.environ.get("MUTANT_UNDER_TEST") == "stats"  # read before the session fixture takes it out
_SHARED: dict[object, set[str]] = {}  # shared work (a fixture definition, a cached model) → functions it called


@contextlib.contextmanager
def shared_calls(key):
    """Record the functions of analysis/ that the block calls as ``key``'s (statistics run only);
    the current test is credited with them too."""
    if not _STATS_RUN:
        yield
        return
    from mutmut.state import state

    hits = state()._stats
    before = set(hits)
    hits.clear()
    try:
        yield
    finally:
        _SHARED.setdefault(key, set()).update(hits)
        hits.update(before)


def credit_shared(key) -> None:
    """The current test uses ``key``'s shared work: credit it with the functions that work called."""
    if _STATS_RUN and key in _SHARED:
        from mutmut.state import state

        state()._stats.update(_SHARED[key])


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    if fixturedef.scope == "function":
        yield
        return
    with shared_calls(fixturedef):
        yield


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """Before mutmut's own teardown hook collects this test's calls: add those of every shared
    fixture the test uses (directly or through other fixtures)."""
    if not _STATS_RUN:
        return
    info = getattr(item, "_fixtureinfo", None)  # every pytest Function has one; other items may not
    for defs in (info.name2fixturedefs.values() if info is not None else ()):
        for fixturedef in defs:
            credit_shared(fixturedef)
