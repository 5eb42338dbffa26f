"""Mutation testing of analysis/ with mutmut: ``make mutation`` runs this.

mutmut plants one small bug at a time (a ``<`` for a ``<=``, a changed constant, a dropped
argument, …) into a copy of analysis/ and runs the tests that cover the changed function; a mutant
no test notices *survived*: a missing test, or an *equivalent* mutant (it changes nothing a user
can see). The configuration is ``[tool.mutmut]`` in pyproject.toml (analysis/ without the toy
translators, which are training code; the test selection).

This script runs mutmut in ``build/mutation/`` (a copy of the checkout, kept between runs, so a
second run only tests what changed), then writes the report (default
``benchmarks/mutation-report.md``) and prints the score::

    score = killed / (tested − equivalent)

``tested`` counts every mutant mutmut ran or found no covering test for (``no tests`` counts as
survived); ``killed`` includes timeouts and crashes of the mutated code. Equivalent mutants are
listed by id, each with the reason, in ``benchmarks/mutation-equivalent.toml``; a note whose
mutant no longer survives (ids move when the code changes) is reported as stale.

Usage::

    python benchmarks/mutation.py                                    # all of analysis/ (hours)
    python benchmarks/mutation.py --only analysis/aggregate.py \\
        --tests "tests/test_aggregate.py tests/test_viewdata.py"    # one module, its tests
    python benchmarks/mutation.py --only analysis/aggregate.py --tests "…" --rerun-survivors
                                                                     # after adding tests
    python benchmarks/mutation.py --report-only                      # rewrite the report
    python benchmarks/mutation.py --sample 400                       # estimate all of analysis/

A whole run of analysis/ takes many hours on two cores. ``--sample N`` draws N mutants at random
(seeded) from those not tested yet and tests only them; the report then *estimates* the score of
every mutant in scope: the mutants tested before count as they are, the untested rest as the sample
says (a 95 % interval from the sample's size). The sample is kept in ``build/mutation/sample.json``
until the next ``--sample``; ``--rerun-survivors`` includes it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import random
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation"
#: what the tests need besides analysis/ (mutmut copies tests/ and pyproject.toml itself; README.md
#: holds the Python snippet tests/test_readme_python.py runs)
COPIED = ("analysis", "gui", "tests", "main.py", "headmap.py", "pyproject.toml", "README.md")
EQUIVALENT = ROOT / "benchmarks" / "mutation-equivalent.toml"
REPORT = ROOT / "benchmarks" / "mutation-report.md"
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
SURVIVED = {"survived", "no tests", "suspicious"}


# -- the work copy ----------------------------------------------------------------------------
def _sync(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` (modification times kept, so mutmut re-tests only what
    changed); caches are left out."""
    if src.is_file():
        if not dst.exists() or dst.stat().st_mtime_ns != src.stat().st_mtime_ns or dst.stat().st_size != src.stat().st_size:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        return
    wanted = set()
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if "__pycache__" in rel.parts or path.suffix == ".pyc":
            continue
        wanted.add(rel)
        if path.is_file():
            _sync(path, dst / rel)
    if dst.exists():
        for path in sorted(dst.rglob("*"), reverse=True):
            rel = path.relative_to(dst)
            if rel not in wanted and "__pycache__" not in rel.parts:
                path.unlink() if path.is_file() else shutil.rmtree(path, ignore_errors=True)


def _config(only: list[str], tests: list[str]) -> str:
    """pyproject.toml for the work copy: the project's, with ``--only`` / ``--tests`` applied."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    if not only and not tests:
        return text
    cfg = tomllib.loads(text)["tool"]["mutmut"]
    head, sep, rest = text.partition("[tool.mutmut]")
    # the [tool.mutmut] table is rewritten; the tables after it are kept
    after = rest[rest.find("\n[") + 1:] if "\n[" in rest else ""
    if only:
        cfg["only_mutate"] = only
    if tests:
        cfg["pytest_add_cli_args_test_selection"] = tests
    lines = ["[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in cfg.items()]
    return head + "\n".join(lines) + "\n\n" + after


#: what mutmut appends to every line it generates: a file in mutants/ without it is a plain copy
GENERATED = "# mutmut generated"


def _in_scope(config: str) -> list[Path]:
    """The source files this configuration mutates (mutmut's ``should_mutate``)."""
    from fnmatch import fnmatch

    cfg = tomllib.loads(config)["tool"]["mutmut"]
    only, skip = cfg.get("only_mutate", []), cfg.get("do_not_mutate", [])
    files = []
    for base in cfg.get("source_paths", []):
        for path in sorted((WORK / base).rglob("*.py")):
            rel = path.relative_to(WORK).as_posix()
            if (not only or any(fnmatch(rel, g) for g in only)) and not any(fnmatch(rel, g) for g in skip):
                files.append(Path(rel))
    return files


def _forget_plain_copies(config: str) -> bool:
    """Remove the plain copies in mutants/ of the files this run mutates; True if there were any.

    mutmut copies a file it does not mutate in this run (outside ``--only``) into mutants/ with a
    new modification time, and later takes a copy newer than its source for one already mutated:
    a module left out of one run would never be mutated by a later run that names it. Its results
    (``.meta``) are kept, and mutmut keeps them for every unchanged function when it mutates the
    file again."""
    removed = False
    for rel in _in_scope(config):
        copy = WORK / "mutants" / rel
        if copy.exists() and GENERATED not in copy.read_text(encoding="utf-8"):
            copy.unlink()
            removed = True
    return removed


def _refresh_data_files(config: str) -> list[Path]:
    """Bring mutmut's copies of the source folders' other files (model weights, JSON, cards) up to
    date; the changed ones are returned.

    mutmut copies a source folder's files into mutants/ once and never again (it regenerates only
    the Python files it mutates): a bundled model retrained since would be tested in its old form
    there, and a test that reads it would fail in every mutant's run, and in mutmut's statistics run.
    """
    cfg = tomllib.loads(config)["tool"]["mutmut"]
    changed = []
    for base in cfg.get("source_paths", []):
        for path in sorted((WORK / base).rglob("*")):
            rel = path.relative_to(WORK)
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in rel.parts:
                continue
            copy = WORK / "mutants" / rel
            if copy.exists() and (copy.stat().st_size != path.stat().st_size
                                  or copy.read_bytes() != path.read_bytes()):
                shutil.copy2(path, copy)
                changed.append(rel)
    return changed


def prepare(only: list[str], tests: list[str], fresh: bool) -> None:
    if fresh and WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        _sync(ROOT / name, WORK / name)
    config = _config(only, tests)
    target = WORK / "pyproject.toml"
    if target.read_text(encoding="utf-8") != config:
        target.write_text(config, encoding="utf-8")
    # mutmut learns which tests cover which function once ("stats"), then only for tests it has not
    # seen: tests it saw while another set of files was mutated never touched this run's files'
    # functions. A run that mutates other files or runs other tests than the last one starts over.
    scope = WORK / "mutants" / ".mutation-scope"
    stats = WORK / "mutants" / "mutmut-stats.json"
    _refresh_data_files(config)
    changed = _forget_plain_copies(config)
    key = json.dumps({"only": sorted(only), "tests": tests})
    if changed or not scope.exists() or scope.read_text(encoding="utf-8") != key:
        stats.unlink(missing_ok=True)
    scope.parent.mkdir(parents=True, exist_ok=True)
    scope.write_text(key, encoding="utf-8")


def run_mutmut(max_children: int, mutants: list[str] | None = None) -> int:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "TOKENIZERS_PARALLELISM": "false",
           # one thread per worker: mutmut runs max_children test processes at once
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *(mutants or [])]
    return subprocess.call(cmd, cwd=WORK, env=env)


#: mutmut's own first steps of ``mutmut run`` (copy the sources, write every mutant), without tests
_GENERATE = """
import os
from mutmut.__main__ import (copy_also_copy_files, copy_src_dir, create_mutants, setup_source_paths,
                             store_lines_covered_by_tests)
from mutmut.mutation.trampoline import set_mutant_under_test
set_mutant_under_test("mutant_generation")
os.makedirs("mutants", exist_ok=True)
copy_src_dir()
copy_also_copy_files()
setup_source_paths()
store_lines_covered_by_tests()
create_mutants({children})
"""

SAMPLE = WORK / "sample.json"


def generate(max_children: int) -> None:
    """Write every mutant of this run's files into mutants/ (their ``.meta`` lists their ids)."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    subprocess.check_call([sys.executable, "-c", _GENERATE.format(children=max_children)],
                          cwd=WORK, env=env, stdout=subprocess.DEVNULL)


def draw_sample(n: int, seed: int, only: list[str]) -> dict:
    """``n`` mutants drawn uniformly (seeded) from those in scope that were never tested; kept in
    ``sample.json`` with the size of the population they were drawn from."""
    status = results(only)
    pending = sorted(k for k, st in status.items() if st == "not checked")
    if not pending:
        raise SystemExit("every mutant in scope has been tested: nothing to sample")
    chosen = sorted(random.Random(seed).sample(pending, min(n, len(pending))))
    sample = {"seed": seed, "population": len(pending), "scope": only or ["analysis/"],
              "date": _dt.date.today().isoformat(), "mutants": chosen}
    SAMPLE.write_text(json.dumps(sample, indent=1, ensure_ascii=False), encoding="utf-8")
    return sample


def load_sample() -> dict | None:
    return json.loads(SAMPLE.read_text(encoding="utf-8")) if SAMPLE.exists() else None


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion k / n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def estimate(status: dict[str, str], equivalent: dict[str, str], sample: dict) -> dict:
    """The score of every mutant in scope, estimated from the sample.

    Mutants tested outside the sample count exactly (killed, surviving, equivalent). The
    ``population`` mutants that were untested when the sample was drawn are estimated as the
    sample's tested mutants: the share that is not equivalent (q) and, of those, the share
    killed (p). The interval applies the sample's 95 % Wilson interval of p (q's uncertainty is
    left out: it moves both sides of the ratio alike).
    """
    drawn = set(sample["mutants"])
    known = {k: st for k, st in status.items() if k not in drawn and st in KILLED | SURVIVED}
    k_known = sum(1 for st in known.values() if st in KILLED)
    s_known = sum(1 for k, st in known.items() if st in SURVIVED and k not in equivalent)
    tested = {k: status[k] for k in drawn if status.get(k) in KILLED | SURVIVED}
    killed = sum(1 for st in tested.values() if st in KILLED)
    eq = sum(1 for k, st in tested.items() if st in SURVIVED and k in equivalent)
    survived = len(tested) - killed - eq
    out = {"drawn": len(drawn), "tested": len(tested), "killed": killed, "survived": survived,
           "equivalent": eq, "population": sample["population"], "known_killed": k_known,
           "known_survived": s_known, "untested_in_sample": len(drawn) - len(tested)}
    if killed + survived == 0:
        return {**out, "score": float("nan"), "low": float("nan"), "high": float("nan")}
    q = (killed + survived) / len(tested)
    n_rest = sample["population"] * q

    def total(p: float) -> float:
        return 100.0 * (k_known + n_rest * p) / (k_known + s_known + n_rest)

    low, high = _wilson(killed, killed + survived)
    return {**out, "score": total(killed / (killed + survived)), "low": total(low), "high": total(high)}


# -- the report -------------------------------------------------------------------------------
def results(only: list[str] | None = None) -> dict[str, str]:
    """mutant id → mutmut's status, read from its ``mutants/**/*.meta`` files (of the files
    matching ``only`` when given: an earlier, wider run's results stay in the work copy)."""
    from fnmatch import fnmatch

    from mutmut.stats import status_by_exit_code

    out: dict[str, str] = {}
    mutants = WORK / "mutants"
    for meta in sorted(mutants.rglob("*.py.meta")):
        source = meta.relative_to(mutants).as_posix().removesuffix(".meta")
        if only and not any(fnmatch(source, g) for g in only):
            continue
        data = json.loads(meta.read_text(encoding="utf-8"))
        for key, code in data.get("exit_code_by_key", {}).items():
            out[key] = status_by_exit_code[code]
    return out


def equivalents() -> dict[str, str]:
    if not EQUIVALENT.exists():
        return {}
    return dict(tomllib.loads(EQUIVALENT.read_text(encoding="utf-8")).get("equivalent", {}))


def diff_of(mutant: str) -> str:
    """The mutant's diff, as ``mutmut show`` prints it."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    here = Path.cwd()
    try:
        os.chdir(WORK)
        return get_diff_for_mutant(mutant)
    except Exception as exc:  # a report without one diff beats no report
        return f"(no diff: {exc})"
    finally:
        os.chdir(here)


def score(status: dict[str, str], equivalent: dict[str, str]) -> dict:
    counts = Counter(status.values())
    tested = {k: s for k, s in status.items() if s in KILLED | SURVIVED}
    killed = sum(1 for s in tested.values() if s in KILLED)
    eq = {k for k in equivalent if tested.get(k) in SURVIVED}
    survivors = sorted(k for k, s in tested.items() if s in SURVIVED and k not in eq)
    # a note on a module this report does not cover (another run's) is not stale
    modules = {_module_of(k) for k in status}
    stale = sorted(k for k in equivalent if k not in eq and _module_of(k) in modules)
    denominator = len(tested) - len(eq)
    return {"counts": dict(counts), "tested": len(tested), "killed": killed, "equivalent": sorted(eq),
            "survivors": survivors, "stale": stale,
            "score": 100.0 * killed / denominator if denominator else float("nan")}


def _module_of(mutant: str) -> str:
    return mutant.rsplit(".", 1)[0].split(".x_")[0].split(".xǁ")[0]


def _module_row(module: str, n: int, status: dict[str, str], s: dict) -> str:
    mine = {k: v for k, v in status.items() if _module_of(k) == module}
    eq = sum(1 for k in s["equivalent"] if k in mine)
    killed = sum(1 for v in mine.values() if v in KILLED)
    survived = sum(1 for v in mine.values() if v in SURVIVED) - eq
    tested = killed + survived
    score = f"{100.0 * killed / tested:.1f} %" if tested else "–"
    return f"| {module} | {n} | {n - killed - survived - eq} | {killed} | {survived} | {eq} | {score} |"


RUNS = WORK / "runs.json"


def _record_run(only: list[str], tests: str) -> None:
    """Remember which tests each module was last run with (the report lists them)."""
    runs = json.loads(RUNS.read_text(encoding="utf-8")) if RUNS.exists() else {}
    runs[" ".join(only) or "analysis/"] = {"tests": tests or "[tool.mutmut] selection",
                                          "date": _dt.date.today().isoformat()}
    RUNS.write_text(json.dumps(runs, indent=1, ensure_ascii=False), encoding="utf-8")


def sample_estimate(status: dict[str, str], equivalent: dict[str, str], only: list[str]) -> tuple[dict, dict] | None:
    """The last sample and its :func:`estimate`, when it was drawn from this scope."""
    sample = load_sample()
    if sample is None or sample["scope"] != (only or ["analysis/"]):
        return None
    return sample, estimate(status, equivalent, sample)


def _estimate_lines(found: tuple[dict, dict] | None) -> list[str]:
    """The report's section on the estimate of the whole scope (none before a sampled mutant ran)."""
    if found is None or math.isnan(found[1]["score"]):
        return []
    sample, e = found
    return [
        f"## Estimate for every mutant in scope: **{e['score']:.1f} %** (95 % interval "
        f"{e['low']:.1f}–{e['high']:.1f} %)",
        "",
        f"A random sample (seed {sample['seed']}, drawn {sample['date']}) of {e['drawn']} of the "
        f"{e['population']} mutants that had never been tested: {e['tested']} tested, {e['killed']} "
        f"killed, {e['survived']} surviving, {e['equivalent']} equivalent"
        + (f", {e['untested_in_sample']} not tested yet" if e["untested_in_sample"] else "") + ". "
        f"The mutants tested before the sample count as they are ({e['known_killed']} killed, "
        f"{e['known_survived']} surviving, not counting equivalent ones); the untested rest counts "
        "as the sample's share of killed mutants among the non-equivalent ones.",
        "",
    ]


def write_report(path: Path, scope: str, only: list[str]) -> dict:
    status = results(only)
    equivalent = equivalents()
    s = score(status, equivalent)
    s["sample"] = sample_estimate(status, equivalent, only)
    modules = Counter(_module_of(k) for k in status)
    lines = [
        "# Mutation testing report (mutmut)",
        "",
        f"- date: {_dt.date.today().isoformat()}",
        f"- scope: {scope}",
        f"- mutants: {len(status)} ({', '.join(f'{n} {k}' for k, n in sorted(s['counts'].items()))})",
        f"- **score: {s['score']:.1f} %** = killed {s['killed']} / (tested {s['tested']} − equivalent "
        f"{len(s['equivalent'])})",
        "",
        "Made by `make mutation` (benchmarks/mutation.py). Every surviving mutant is a missing test or an "
        "equivalent mutant; equivalent ones are listed with the reason in benchmarks/mutation-equivalent.toml.",
        "",
        "## Mutants per module",
        "",
        "A module is measured when no mutant is left not checked; the score counts only what was tested.",
        "",
        "| module | mutants | not checked | killed | survived | equivalent | score |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(_module_row(m, n, status, s) for m, n in sorted(modules.items())),
        "",
        "## Runs (the files mutated, and the tests they were last run with)",
        "",
        *(f"- {files} ({r['date']}): {r['tests']}"
          for files, r in (json.loads(RUNS.read_text(encoding="utf-8")) if RUNS.exists() else {}).items()),
        "",
        *_estimate_lines(s["sample"]),
        f"## Surviving mutants ({len(s['survivors'])}): a test is missing, or add the mutant to the notes",
        "",
    ]
    for m in s["survivors"]:
        lines += [f"### {m} ({status[m]})", "", "```diff", diff_of(m), "```", ""]
    lines += [f"## Equivalent mutants ({len(s['equivalent'])})", ""]
    lines += [f"- {m}: {equivalent[m]}" for m in s["equivalent"]]
    if s["stale"]:
        lines += ["", f"## Stale notes ({len(s['stale'])}): these mutants are gone or no longer survive", ""]
        lines += [f"- {m}: {status.get(m, 'gone')}" for m in s["stale"]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", default=[], metavar="GLOB",
                   help="mutate only these files (globs, e.g. analysis/aggregate.py); default: [tool.mutmut]")
    p.add_argument("--tests", default="", metavar="PYTEST_ARGS",
                   help="the tests to run, as one string of pytest arguments (e.g. \"tests/test_aggregate.py "
                        "-k 'not cli'\"); default: [tool.mutmut]'s selection")
    p.add_argument("--max-children", type=int, default=os.cpu_count() or 2, help="parallel test processes")
    p.add_argument("--fresh", action="store_true", help="start from a new copy (forget earlier results)")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the last run")
    p.add_argument("--rerun-survivors", action="store_true",
                   help="test the surviving mutants (of --only) again, e.g. after adding tests: mutmut keeps a "
                        "mutant's result until its function changes")
    p.add_argument("--sample", type=int, default=0, metavar="N",
                   help="test N mutants drawn at random from those never tested, and estimate the score "
                        "of every mutant in scope from them")
    p.add_argument("--sample-seed", type=int, default=0, metavar="SEED", help="seed of --sample (default 0)")
    p.add_argument("--report", type=Path, default=REPORT, help=f"where the report goes (default {REPORT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    tests = shlex.split(args.tests)
    scope = ", ".join(args.only) if args.only else "analysis/ (all but analysis/toy_translation/)"
    if not args.report_only:
        scope += "; tests: " + (args.tests if tests else "[tool.mutmut] selection")
    if not args.report_only:
        prepare(args.only, tests, args.fresh)
        again = None
        if args.sample > 0:
            generate(args.max_children)
            again = draw_sample(args.sample, args.sample_seed, args.only)["mutants"]
            print(f"testing a sample of {len(again)} mutants")
        elif args.rerun_survivors:
            eq = equivalents()
            again = sorted(k for k, st in results(args.only).items() if st in SURVIVED and k not in eq)
            if not again:
                print("no surviving mutants to test again")
                again = None
        code = run_mutmut(args.max_children, again)
        _record_run(args.only, args.tests)
        if code != 0:
            print(f"mutmut exited with {code}", file=sys.stderr)
            return code
    s = write_report(args.report, scope, args.only)
    print(f"mutation score: {s['score']:.1f} % (killed {s['killed']} of {s['tested']} tested, "
          f"{len(s['equivalent'])} equivalent, {len(s['survivors'])} surviving) — report: {args.report}")
    if s["sample"] is not None:
        e = s["sample"][1]
        print(f"estimated score of every mutant in scope: {e['score']:.1f} % "
              f"(95 % interval {e['low']:.1f}–{e['high']:.1f} %; sample of {e['drawn']}, "
              f"{e['tested']} tested)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
