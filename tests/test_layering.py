"""The analysis layer never imports Qt or the GUI (napari-style layering, see STYLE.md).

Two checks: importing every ``analysis`` module in a fresh interpreter leaves PySide6 and ``gui`` out
of ``sys.modules``, and no source file under ``analysis/`` mentions them. A third keeps the modules'
own helpers their own: no ``analysis`` module uses another one's ``_private`` names.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANALYSIS = ROOT / "analysis"


_FORBIDDEN = re.compile(r"PySide6|^\s*(from\s+gui(\.|\s)|import\s+gui\b)", re.MULTILINE)


def analysis_modules() -> list[str]:
    """Every module of the analysis package, found by scanning the folder (new modules included)."""
    mods = []
    for path in sorted(ANALYSIS.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith(".") or p == "__pycache__" for p in parts):
            continue
        mods.append(".".join(parts))
    return mods


_PROBE = r"""
import importlib, json, sys
report = {}
for name in json.loads(sys.argv[1]):
    before = set(sys.modules)
    try:
        importlib.import_module(name)
    except Exception as exc:
        report[name] = {"error": f"{type(exc).__name__}: {exc}"}
        continue
    new = set(sys.modules) - before
    report[name] = {"qt": sorted(m for m in new if m.split(".")[0] in ("PySide6", "shiboken6", "PyQt5", "PyQt6"))
                    , "gui": sorted(m for m in new if m == "gui" or m.startswith("gui."))}
report["__all__"] = {"qt": sorted(m for m in sys.modules if m.split(".")[0] in ("PySide6", "shiboken6")),
                     "gui": sorted(m for m in sys.modules if m == "gui" or m.startswith("gui."))}
print(json.dumps(report))
"""


def test_modules_are_found():
    mods = analysis_modules()
    for core in ("analysis", "analysis.loader", "analysis.capture", "analysis.tokens", "analysis.cli",
                 "analysis.npz", "analysis.result", "analysis.bundled", "analysis.errors"):
        assert core in mods


def test_importing_analysis_does_not_import_qt():
    mods = analysis_modules()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.pop("QT_API", None)
    res = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(mods)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    errors = {m: r["error"] for m, r in report.items() if "error" in r}
    assert not errors, f"analysis modules that fail to import (re-run if one is mid-edit): {errors}"
    offenders = {m: r for m, r in report.items() if r.get("qt") or r.get("gui")}
    assert not offenders, f"importing these analysis modules pulls in Qt / gui: {offenders}"


def test_no_analysis_source_mentions_qt_or_gui():
    offenders = []
    for path in sorted(ANALYSIS.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for m in _FORBIDDEN.finditer(text):
            line = text[text.rfind("\n", 0, m.start()) + 1 : text.find("\n", m.end())].strip()
            rel = path.relative_to(ANALYSIS).as_posix()
            offenders.append(f"{rel}: {line}")
    assert not offenders, "analysis/ must not import Qt or the GUI:\n" + "\n".join(offenders)


def test_forbidden_pattern_catches_what_it_should():
    for bad in ("from PySide6 import QtCore", "import PySide6", "from gui.app import x", "import gui",
                "    from gui import widgets"):
        assert _FORBIDDEN.search(bad), bad
    for ok in ("# the window lives in gui/", "guide = 1", "from guidance import x", "import guitar"):
        assert not _FORBIDDEN.search(ok), ok


def _private_imports(path: Path) -> list[str]:
    """``from .x import _name`` and ``x._name`` (x an imported analysis module) in one file."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            inside = node.level > 0 or (node.module or "").startswith("analysis")
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if inside and private:
                    found.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}")
                if inside and node.module is None:  # from . import capture
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update(a.asname or a.name.split(".")[-1] for a in node.names if a.name.startswith("analysis"))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_analysis_module_uses_another_modules_private_names():
    offenders = {}
    for path in sorted(ANALYSIS.rglob("*.py")):
        hits = _private_imports(path)
        if hits:
            offenders[path.relative_to(ANALYSIS).as_posix()] = hits
    assert not offenders, f"make these helpers public in their own module: {offenders}"


def test_private_import_check_catches_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from .capture import _prediction, encode\nfrom . import loader\nx = loader._cancelled\n"
                   "from analysis.rollout import _report\n")
    assert len(_private_imports(bad)) == 3
    ok = tmp_path / "ok.py"
    ok.write_text("from __future__ import annotations\nfrom .capture import prediction_for\n"
                  "import numpy as np\nx = np._NoValue\nfrom .tasks import __all__\n")
    assert _private_imports(ok) == []


# -- gui: tabs and views get a small interface, never the window ------------------------------------
_MAIN_WINDOW = re.compile(r"^\s*(from\s+(gui|\.\.?)\.?main_window\s+import|import\s+gui\.main_window|"
                          r"from\s+\.\.\s+import\s+main_window)", re.MULTILINE)


def test_no_tab_or_view_imports_the_main_window():
    offenders = []
    for folder in ("tabs", "views"):
        for path in sorted((ROOT / "gui" / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if _MAIN_WINDOW.search(text) or "main_window" in text:
                offenders.append(path.relative_to(ROOT).as_posix())
    assert not offenders, "tabs and views must not reach into the main window: " + ", ".join(offenders)
    for bad in ("from gui.main_window import error_message", "from ..main_window import x",
                "    from gui.main_window import MainWindow", "import gui.main_window"):
        assert _MAIN_WINDOW.search(bad), bad


def test_tabs_get_a_tab_context_not_the_window():
    import ast

    for path in sorted((ROOT / "gui" / "tabs").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                args = [a.arg for a in node.args.args]
                assert "window" not in args, f"{path.name}: a tab's __init__ takes the window"
