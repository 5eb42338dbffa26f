"""The CLI's public contract, option by option (issue 19): every flag's names, type, default,
choices, metavar and help text, and its group, against ``tests/golden/cli_help.json``.

``test_cli.py`` checks that every flag is documented and each one's behaviour; mutation testing
found that a flag's help text emptied, its default or metavar changed or its type dropped (a
threshold read as text) passed them. Other tools and scripts read these flags: after changing one on
purpose, rewrite the file with ``python -m tests.test_cli_help_golden`` and read the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

from analysis.cli import build_parser

GOLDEN = Path(__file__).parent / "golden" / "cli_help.json"


def _value(v):
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list | tuple):
        return [_value(x) for x in v]
    return getattr(v, "__name__", repr(v))


def contract() -> dict:
    parser = build_parser()
    groups = {id(a): g.title for g in parser._action_groups for a in g._group_actions}
    out = {"prog": parser.prog, "description": parser.description, "epilog": parser.epilog, "flags": {}}
    for action in parser._actions:
        out["flags"][" ".join(action.option_strings) or action.dest] = {
            "group": groups.get(id(action)), "dest": action.dest, "kind": type(action).__name__,
            "type": _value(action.type), "default": _value(action.default), "choices": _value(action.choices),
            "metavar": _value(action.metavar), "nargs": _value(action.nargs), "required": action.required,
            "help": action.help, "const": _value(action.const),
        }
    exclusive = [sorted(s for a in g._group_actions for s in a.option_strings) for g in parser._mutually_exclusive_groups]
    out["mutually_exclusive"] = sorted(exclusive)
    return out


def test_every_flag_is_as_documented():
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    got = json.loads(json.dumps(contract()))
    assert sorted(got["flags"]) == sorted(golden["flags"])
    changed = {f: (got["flags"][f], golden["flags"][f]) for f in got["flags"] if got["flags"][f] != golden["flags"][f]}
    assert not changed, "\n".join(f"{f}\n  now:      {a}\n  expected: {b}" for f, (a, b) in changed.items())
    assert got == golden


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(contract(), ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}")
