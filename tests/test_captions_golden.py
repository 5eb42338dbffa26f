"""Every caption, word for word (issue 19: a caption is teaching text; the substring checks of
test_captions.py let a changed sentence through).

The expected texts live in ``tests/golden/captions.json``, one per case below; each was read and
checked by hand against the view it describes. After changing a caption on purpose, rewrite the
file with ``python -m tests.test_captions_golden`` and read the diff before committing it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from analysis.figures import ViewSpec
from analysis.views import VIEWS
from analysis.views.captions import view_caption
from analysis.words import group_capture
from tests.test_aggregate import make_decoder, make_encoder, make_seq2seq

GOLDEN = Path(__file__).parent / "golden" / "captions.json"
PADDING = SimpleNamespace(mask_report=SimpleNamespace(pad_positions=(5, 6)))
TOKENS = SimpleNamespace(mask_report=SimpleNamespace(masked_positions=(1,)))


def cases() -> dict[str, str]:
    """Case name → caption, for every view of each kind of model and every option a caption reads."""
    caps = {"encoder": make_encoder(), "decoder": make_decoder(), "seq2seq": make_seq2seq()}
    specs: list[tuple[str, str, ViewSpec, object]] = []
    for kind in caps:
        stacks = ("encoder", "decoder", "cross") if kind == "seq2seq" else (None,)
        for stack in stacks:
            tag = f"{kind}/{stack or 'self'}"
            for view in ("head", "layer", "model", "lines", "compare"):
                specs.append((f"{tag}/{view}", kind, ViewSpec(view=view, stack=stack, layer=1), None))
            for stat in ("entropy", "mean_distance", "to_first"):
                specs.append((f"{tag}/stats/{stat}", kind, ViewSpec(view="stats", stack=stack, stat=stat), None))
            base = ViewSpec(view="head", stack=stack)
            specs += [
                (f"{tag}/head/hidden-renormalised", kind, replace(base, hide_special=True, renormalize=True), None),
                (f"{tag}/head/hidden", kind, replace(base, hide_special=True, renormalize=False), None),
                (f"{tag}/head/no-grey-mask", kind, replace(base, show_causal_mask=False), None),
                (f"{tag}/layer/hidden-renormalised", kind,
                 ViewSpec(view="layer", stack=stack, hide_special=True, renormalize=True), None),
                (f"{tag}/model/hidden", kind, ViewSpec(view="model", stack=stack, hide_special=True), None),
                (f"{tag}/lines/hidden", kind, ViewSpec(view="lines", stack=stack, hide_special=True), None),
            ]
            if stack != "cross":
                specs += [
                    (f"{tag}/rollout", kind, ViewSpec(view="rollout", stack=stack), None),
                    (f"{tag}/rollout/alpha-0.3-through-0", kind,
                     ViewSpec(view="rollout", stack=stack, residual=0.3, through_layer=0), None),
                    (f"{tag}/flow/shares", kind, ViewSpec(view="flow", stack=stack, flow_values="shares"), None),
                    (f"{tag}/flow/raw", kind, ViewSpec(view="flow", stack=stack, flow_values="raw", through_layer=1),
                     None),
                ]
        specs += [(f"{kind}/masks/padding", kind, ViewSpec(view="masks"), PADDING),
                  (f"{kind}/masks/tokens", kind, ViewSpec(view="masks"), TOKENS),
                  (f"{kind}/masks/no-report", kind, ViewSpec(view="masks"), None)]
    for rows in ("both", "input", "predicts"):
        for stack in ("decoder", "cross"):
            specs.append((f"seq2seq/{stack}/head/rows-{rows}", "seq2seq", ViewSpec(view="head", stack=stack, row_labels=rows),
                          None))
    specs += [
        ("seq2seq/alignment", "seq2seq", ViewSpec(view="alignment"), None),
        ("seq2seq/steps/2", "seq2seq", ViewSpec(view="steps", step=2), None),
        ("seq2seq/steps/0", "seq2seq", ViewSpec(view="steps", step=0), None),
        # specs the window may describe before checking them: a step past the end, an unknown
        # statistic or row mode read plainly
        ("seq2seq/steps/past-the-end", "seq2seq", ViewSpec(view="steps", step=99), None),
        ("seq2seq/steps/one-past-the-last", "seq2seq", ViewSpec(view="steps", step=6), None),
        ("encoder/self/stats/unknown", "encoder", ViewSpec(view="stats", stat="attention_to_commas"), None),
        ("seq2seq/cross/head/rows-unknown", "seq2seq", ViewSpec(view="head", stack="cross", row_labels="sideways"),
         None),
    ]
    out = {name: view_caption(caps[kind], spec, inputs) for name, kind, spec, inputs in specs}
    words = {k: group_capture(c) for k, c in caps.items()}
    out["encoder/words/head"] = view_caption(words["encoder"], ViewSpec(view="head", group="words"))
    out["seq2seq/words/cross/head"] = view_caption(words["seq2seq"], ViewSpec(view="head", stack="cross", group="words"))
    out["seq2seq/words/masks"] = view_caption(words["seq2seq"], ViewSpec(view="masks", group="words"), PADDING)
    return out


@pytest.fixture(scope="module")
def golden() -> dict[str, str]:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_the_cases_cover_every_view():
    names = list(cases())
    assert [v for v in VIEWS if not any(f"/{v}" in name for name in names)] == []


def test_every_caption_reads_as_checked(golden):
    got = cases()
    assert sorted(got) == sorted(golden)
    changed = [name for name in got if got[name] != golden[name]]
    assert not changed, "\n\n".join(f"{n}\n  now:      {got[n]}\n  expected: {golden[n]}" for n in changed)


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(cases(), ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}")
