"""Every word and number written on an exported figure, in drawing order (issue 19: a title, an
axis label, a tick label or a value written in a cell that changes is a change a reader sees;
the drawing tests check shapes and colours, not every text).

The expected texts live in ``tests/golden/figure_texts.json``, one list per case; they were read
by hand against the figures. After changing a figure's words on purpose, rewrite the file with
``python -m tests.test_figure_texts_golden`` and read the diff before committing it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from analysis.figures import ViewSpec, build_figure
from analysis.views import VIEWS
from analysis.views.spec import ViewInputs
from tests.test_aggregate import make_decoder, make_encoder, make_seq2seq
from tests.test_quiet import applicable

GOLDEN = Path(__file__).parent / "golden" / "figure_texts.json"


def texts(fig) -> list[str]:
    FigureCanvasAgg(fig).draw()  # tick labels of formatters exist once drawn
    return [a.get_text() for a in fig.findobj(Text) if a.get_visible() and a.get_text()]


def cases() -> dict[str, list[str]]:
    caps = {"encoder": make_encoder(), "decoder": make_decoder(), "seq2seq": make_seq2seq()}
    specs: list[tuple[str, str, ViewSpec, ViewInputs | None]] = []
    for kind, cap in caps.items():
        for spec, inputs in applicable(cap, None):
            if spec.view != "masks":  # the mask lab's figure: tests/test_gui_mask_lab.py and test_view_exports.py
                specs.append((f"{kind}/{spec.view}", kind, spec, inputs))
        specs += [
            (f"{kind}/head/hidden-renormalised", kind, ViewSpec(view="head", hide_special=True, renormalize=True), None),
            (f"{kind}/head/words", kind, ViewSpec(view="head", group="words"), None),
            (f"{kind}/stats/to_previous", kind, ViewSpec(view="stats", stat="to_previous"), None),
        ]
    specs += [
        ("seq2seq/head/cross/rows-input", "seq2seq", ViewSpec(view="head", stack="cross", row_labels="input"), None),
        ("seq2seq/head/cross/rows-predicts", "seq2seq", ViewSpec(view="head", stack="cross", row_labels="predicts"),
         None),
        ("seq2seq/stats/cross/to_previous", "seq2seq", ViewSpec(view="stats", stack="cross", stat="to_previous"), None),
        ("seq2seq/steps/3", "seq2seq", ViewSpec(view="steps", step=3), None),
        ("decoder/flow/raw", "decoder", ViewSpec(view="flow", flow_values="raw"), None),
        ("encoder/head/log", "encoder", ViewSpec(view="head", scale="log"), None),
        ("encoder/head/layer1-head2", "encoder", ViewSpec(view="head", layer=1, head=2), None),
    ]
    return {name: texts(build_figure(caps[kind], spec, inputs)) for name, kind, spec, inputs in specs}


@pytest.fixture(scope="module")
def got() -> dict[str, list[str]]:
    return cases()


def test_the_cases_cover_every_view_but_the_mask_lab(got):
    assert {name.split("/")[1] for name in got} == set(VIEWS) - {"masks"}


def test_every_figure_writes_the_words_checked(got):
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert sorted(got) == sorted(golden)
    changed = [name for name in got if got[name] != golden[name]]
    assert not changed, "\n\n".join(
        f"{n}\n  now:      {got[n]}\n  expected: {golden[n]}" for n in changed)


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(cases(), ensure_ascii=False, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}")
