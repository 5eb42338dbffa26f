"""benchmarks/mutation.py: the sampled estimate of the mutation score (pure arithmetic)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "mutation.py"
_spec = importlib.util.spec_from_file_location("headmap_mutation_script", _PATH)
mutation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutation)


def test_wilson_interval_matches_its_formula():
    assert mutation._wilson(0, 0) == (0.0, 1.0)
    low, high = mutation._wilson(9, 10)
    assert low == pytest.approx(0.5958, abs=1e-4)
    assert high == pytest.approx(0.9821, abs=1e-4)
    low, high = mutation._wilson(10, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=1e-4)


def _status():
    # tested before the sample: 8 killed, 2 surviving (one of them equivalent), 1 never tested
    status = {f"analysis.a.x_f__mutmut_{i}": "killed" for i in range(8)}
    status["analysis.a.x_f__mutmut_8"] = "survived"
    status["analysis.a.x_f__mutmut_9"] = "survived"
    # the sample: 3 killed (one timeout), 1 survived, 1 equivalent, 1 no tests, 1 not checked yet
    status.update({
        "analysis.b.x_g__mutmut_1": "killed",
        "analysis.b.x_g__mutmut_2": "timeout",
        "analysis.b.x_g__mutmut_3": "killed",
        "analysis.b.x_g__mutmut_4": "survived",
        "analysis.b.x_g__mutmut_5": "survived",
        "analysis.b.x_g__mutmut_6": "no tests",
        "analysis.b.x_g__mutmut_7": "not checked",
    })
    return status


def test_estimate_counts_the_known_mutants_exactly_and_the_rest_as_the_sample_says():
    status = _status()
    equivalent = {"analysis.a.x_f__mutmut_9": "same", "analysis.b.x_g__mutmut_5": "same"}
    sample = {"seed": 0, "population": 120, "mutants": [f"analysis.b.x_g__mutmut_{i}" for i in range(1, 8)]}
    e = mutation.estimate(status, equivalent, sample)
    assert (e["drawn"], e["tested"], e["killed"], e["survived"], e["equivalent"]) == (7, 6, 3, 2, 1)
    assert e["untested_in_sample"] == 1
    assert (e["known_killed"], e["known_survived"]) == (8, 1)
    # of the 120 untested mutants, 5/6 are not equivalent (100), and 3/5 of those are killed (60)
    assert e["score"] == pytest.approx(100.0 * (8 + 60) / (8 + 1 + 100))
    low, high = mutation._wilson(3, 5)
    assert e["low"] == pytest.approx(100.0 * (8 + 100 * low) / 109)
    assert e["high"] == pytest.approx(100.0 * (8 + 100 * high) / 109)
    assert e["low"] < e["score"] < e["high"]


def test_estimate_without_a_tested_mutant_in_the_sample_is_not_a_number():
    sample = {"seed": 0, "population": 5, "mutants": ["analysis.b.x_g__mutmut_7"]}
    e = mutation.estimate(_status(), {}, sample)
    assert math.isnan(e["score"]) and e["tested"] == 0


def test_draw_sample_takes_only_untested_mutants_and_is_seeded(tmp_path, monkeypatch):
    monkeypatch.setattr(mutation, "SAMPLE", tmp_path / "sample.json")
    monkeypatch.setattr(mutation, "results", lambda only: _status())
    first = mutation.draw_sample(1, seed=3, only=[])
    assert first["mutants"] == ["analysis.b.x_g__mutmut_7"] and first["population"] == 1
    assert mutation.load_sample() == first
    monkeypatch.setattr(mutation, "results", lambda only: {
        **_status(), **{f"analysis.c.x_h__mutmut_{i}": "not checked" for i in range(50)}})
    a = mutation.draw_sample(10, seed=3, only=[])
    b = mutation.draw_sample(10, seed=3, only=[])
    c = mutation.draw_sample(10, seed=4, only=[])
    assert a["mutants"] == b["mutants"] != c["mutants"]
    assert a["population"] == 51 and len(set(a["mutants"])) == 10
    assert all(_status().get(m, "not checked") == "not checked" for m in a["mutants"])


def test_a_changed_data_file_reaches_mutmuts_copy(tmp_path, monkeypatch):
    """mutmut copies a source folder's other files once: a retrained bundled model must reach it."""
    monkeypatch.setattr(mutation, "WORK", tmp_path)
    (tmp_path / "analysis" / "models").mkdir(parents=True)
    (tmp_path / "mutants" / "analysis" / "models").mkdir(parents=True)
    (tmp_path / "analysis" / "models" / "w.bin").write_bytes(b"new weights")
    (tmp_path / "mutants" / "analysis" / "models" / "w.bin").write_bytes(b"old weights")
    (tmp_path / "analysis" / "same.json").write_text("{}")
    (tmp_path / "mutants" / "analysis" / "same.json").write_text("{}")
    (tmp_path / "analysis" / "code.py").write_text("x = 1\n")
    (tmp_path / "mutants" / "analysis" / "code.py").write_text("x = 2  # mutmut generated\n")
    config = '[tool.mutmut]\nsource_paths = ["analysis/"]\n'
    assert mutation._refresh_data_files(config) == [Path("analysis/models/w.bin")]
    assert (tmp_path / "mutants" / "analysis" / "models" / "w.bin").read_bytes() == b"new weights"
    assert (tmp_path / "mutants" / "analysis" / "code.py").read_text() == "x = 2  # mutmut generated\n"
    assert mutation._refresh_data_files(config) == []


def test_shared_work_is_credited_to_every_test_that_uses_it(monkeypatch):
    """In mutmut's statistics run, the functions a shared fixture (or a cached tiny model) called
    are credited to every test that uses it, not only to the test it first ran in; outside that run
    nothing is recorded."""
    from types import SimpleNamespace

    from mutmut.state import state

    from tests import conftest

    hits = state()._stats
    saved = set(hits)
    monkeypatch.setattr(conftest, "_SHARED", {})
    try:
        monkeypatch.setattr(conftest, "_STATS_RUN", True)
        hits.clear()
        hits.add("analysis.x_before")  # what the first test had called before the fixture
        with conftest.shared_calls("fixture"):
            hits.add("analysis.x_in_fixture")  # what mutmut's trampoline records meanwhile
        assert conftest._SHARED == {"fixture": {"analysis.x_in_fixture"}}
        assert hits == {"analysis.x_before", "analysis.x_in_fixture"}  # the first test keeps both

        hits.clear()  # the next test: it uses the fixture (through another one) but calls nothing itself
        item = SimpleNamespace(_fixtureinfo=SimpleNamespace(name2fixturedefs={"a": ("other", "fixture")}))
        conftest.pytest_runtest_teardown(item, None)
        assert hits == {"analysis.x_in_fixture"}

        hits.clear()
        monkeypatch.setattr(conftest, "_STATS_RUN", False)  # a normal run or a mutant's
        with conftest.shared_calls("model"):
            hits.add("analysis.x_load")
        conftest.credit_shared("fixture")
        conftest.pytest_runtest_teardown(item, None)
        assert hits == {"analysis.x_load"} and "model" not in conftest._SHARED
    finally:
        hits.clear()
        hits.update(saved)
