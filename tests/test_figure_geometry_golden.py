"""How every exported figure is drawn, beyond its words (issue 19): the figure's size, each axes'
limits, ticks and colours, each image's data, colour map and range, each line, patch and text's
place, size, weight and colour.

The drawing tests check what matters about each view one property at a time; mutation testing found
that a changed size constant (a figure a little wider), a label's weight, an axis limit off by one,
a colour or a drawn link's opacity passed them all. A reader of a slide sees each of these, so the
whole drawn state of each case is compared with ``tests/golden/figure_geometry.json`` (numbers
rounded to 4 significant digits; axes positions left out: constrained layout places them from the
font's glyph metrics, which differ between machines).

The cases: every view of each kind of model (as in ``test_figure_texts_golden``), the same views
of long inputs (the size rules' other branch: many labels, thinned ticks, the largest figures),
every theme; the mask lab's figures from synthetic reports (a real model's tiny tokenizer is trained
anew, not byte for byte the same, each session; ``test_view_exports.py`` and ``test_gui_mask_lab.py``
draw real ones).
After changing a figure on purpose, rewrite the file with ``python -m tests.test_figure_geometry_golden``
and read the diff before committing it.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import Collection
from matplotlib.colors import to_hex
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Text

from analysis.figures import ViewSpec, build_figure
from analysis.masks import MaskingReport, PaddingReport
from analysis.result import Capture, Prediction
from analysis.views import VIEWS
from analysis.views.spec import ViewInputs
from tests.font_env import fonts_of_a_fresh_machine
from tests.test_aggregate import make_decoder, make_encoder, make_seq2seq, random_stack, token_seq
from tests.test_quiet import applicable

GOLDEN = Path(__file__).parent / "golden" / "figure_geometry.json"


# -- what is recorded -------------------------------------------------------------------------
def _num(x) -> object:
    """A number rounded to 4 significant digits (None, inf and NaN as text)."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    return float(f"{x:.4g}")


def _nums(values) -> list:
    return [_num(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def _colour(c) -> str | None:
    try:
        return to_hex(c, keep_alpha=True)
    except (ValueError, TypeError):
        return None


def _array(a) -> dict:
    """Shape and summary of an array of numbers (NaNs counted apart)."""
    a = np.ma.filled(np.ma.asarray(a, dtype=np.float64), np.nan)
    finite = a[np.isfinite(a)]
    return {"shape": list(a.shape), "nan": int(np.isnan(a).sum()),
            "sum": _num(finite.sum()) if finite.size else 0, "sq": _num((finite ** 2).sum()) if finite.size else 0,
            "weighted": _num((finite * np.arange(1, finite.size + 1)).sum() / finite.size) if finite.size else 0}


def _text(t: Text) -> list:
    """text, size, weight, colour, rotation, alignment, place (in its own coordinates), opacity"""
    return [t.get_text(), _num(t.get_fontsize()), str(t.get_fontweight()), _colour(t.get_color()),
            _num(t.get_rotation()), t.get_ha(), t.get_va(), *_nums(t.get_position()), _num(t.get_alpha())]


def _tick_labels(labels) -> dict:
    """Tick labels: their texts, and each one's style (size, weight, colour, rotation, alignment,
    opacity) as an index into the styles used (their places are the ticks)."""
    shown = [t for t in labels if t.get_text()]
    styles: list[list] = []
    which = []
    for t in shown:
        style = [_num(t.get_fontsize()), str(t.get_fontweight()), _colour(t.get_color()), _num(t.get_rotation()),
                 t.get_ha(), t.get_va(), _num(t.get_alpha()), t.get_visible()]
        if style not in styles:
            styles.append(style)
        which.append(styles.index(style))
    return {"texts": [t.get_text() for t in shown], "styles": styles, "which": which}


def _image(im: AxesImage) -> dict:
    norm = im.norm
    return {"data": _array(im.get_array()), "cmap": im.get_cmap().name, "bad": _colour(im.get_cmap().get_bad()),
            "norm": type(norm).__name__,
            "vmin": _num(norm.vmin), "vmax": _num(norm.vmax), "extent": _nums(im.get_extent()),
            "alpha": _num(im.get_alpha()), "interpolation": im.get_interpolation(), "visible": im.get_visible()}


def _collection(c: Collection) -> dict:
    paths = c.get_paths()
    verts = [p.vertices for p in paths]
    return {"type": type(c).__name__, "paths": len(paths),
            "vertices": _array(np.concatenate(verts)) if verts else None,
            "faces": _array(c.get_facecolors()), "edges": _array(c.get_edgecolors()),
            "widths": _array(c.get_linewidths()), "alpha": _num(c.get_alpha()),
            "array": None if c.get_array() is None else _array(c.get_array()), "visible": c.get_visible()}


def _patch(p: Patch) -> list:
    """type, corners (summed), face and edge colour, line width, visible, filled, hatch"""
    v = p.get_patch_transform().transform(p.get_path().vertices)
    return [type(p).__name__, *(_nums(v.sum(axis=0)) if len(v) else []), _colour(p.get_facecolor()),
            _colour(p.get_edgecolor()), _num(p.get_linewidth()), p.get_visible(), p.get_fill(), p.get_hatch()]


def _line(ln: Line2D) -> dict:
    return {"x": _array(ln.get_xdata()), "y": _array(ln.get_ydata()), "colour": _colour(ln.get_color()),
            "width": _num(ln.get_linewidth()), "style": str(ln.get_linestyle()), "marker": str(ln.get_marker()),
            "visible": ln.get_visible()}


def _axes(ax) -> dict:
    return {
        "visible": ax.get_visible(), "axis": ax.axison, "face": _colour(ax.get_facecolor()),
        "xlim": _nums(ax.get_xlim()), "ylim": _nums(ax.get_ylim()), "scale": [ax.get_xscale(), ax.get_yscale()],
        "aspect": str(ax.get_aspect()),
        # a colour bar's length over its width (its ``aspect``); None for the other axes
        "box_aspect": None if ax.get_box_aspect() is None else _num(ax.get_box_aspect()),
        "xticks": _nums(ax.get_xticks()), "yticks": _nums(ax.get_yticks()),
        "xlabels": _tick_labels(ax.get_xticklabels()), "ylabels": _tick_labels(ax.get_yticklabels()),
        "labels": [_text(ax.xaxis.label)[:5], _text(ax.yaxis.label)[:5]],  # placed by the layout
        "titles": [_text(t) for t in (ax.title, ax._left_title, ax._right_title) if t.get_text()],
        "spines": [[k, s.get_visible(), _colour(s.get_edgecolor())] for k, s in sorted(ax.spines.items())
                   if s.get_visible()],
        "images": [_image(im) for im in ax.images],
        "collections": [_collection(c) for c in ax.collections],
        "patches": [_patch(p) for p in ax.patches],
        "lines": [_line(ln) for ln in ax.lines],
        "texts": [_text(t) for t in ax.texts if t.get_text()],
    }


def signature(fig) -> dict:
    dpi = fig.dpi
    fig.set_dpi(30)  # ticks and their labels exist once drawn; at a low density it draws faster
    FigureCanvasAgg(fig).draw()
    return {"size": _nums(fig.get_size_inches()), "dpi": _num(dpi), "face": _colour(fig.get_facecolor()),
            "texts": [_text(t) for t in fig.texts if t.get_text()],
            "suptitle": _text(fig._suptitle) if fig._suptitle is not None else None,
            "axes": [_axes(ax) for ax in fig.axes]}


# -- the cases --------------------------------------------------------------------------------
def _korean(n: int) -> list[str]:
    words = ["나는", "이", "강의를", "정말", "좋아한다", "오늘", "학생들이", "책을", "읽는다", "그리고"]
    return [words[i % len(words)] + ("" if i < len(words) else str(i)) for i in range(n)]


def long_encoder(n: int = 40) -> Capture:
    toks = ["[CLS]", *_korean(n - 2), "[SEP]"]
    return Capture(model="toy-bert", kind="encoder", architecture="BertModel", text=" ".join(toks[1:-1]),
                   source=token_seq(toks, special=[True] + [False] * (n - 2) + [True]),
                   stacks={"attentions": random_stack(np.random.default_rng(5), 2, 3, n, n)}, notes=("synthetic",),
                   prediction=Prediction(task="masked_lm", per_position=((3, (("이", 0.5), ("그", 0.25))),)))


def long_decoder(n: int = 36) -> Capture:
    toks = ["<s>", *(f"word{i}" for i in range(n - 1))]
    return Capture(model="toy-gpt", kind="decoder", architecture="GPT2LMHeadModel", text=" ".join(toks[1:]),
                   source=token_seq(toks, special=[True] + [False] * (n - 1)),
                   stacks={"attentions": random_stack(np.random.default_rng(6), 2, 2, n, n, causal=True)},
                   prompt_length=n - 10, generated=True,
                   prediction=Prediction(task="next_token", items=(("word", 0.4), ("the", 0.2))))


def long_seq2seq(s: int = 30, t: int = 24) -> Capture:
    src = token_seq([f"w{i}" for i in range(s - 1)] + ["</s>"], special=[False] * (s - 1) + [True])
    ko = _korean(t - 1)
    dec_in = token_seq(["<pad>", *ko], special=[True] + [False] * (t - 1))
    out = token_seq([*ko, "</s>"], special=[False] * (t - 1) + [True])
    rng = np.random.default_rng(7)
    return Capture(model="toy-marian", kind="seq2seq", architecture="MarianMTModel", text=" ".join(src.display[:-1]),
                   source=src,
                   stacks={"encoder_attentions": random_stack(rng, 2, 2, s, s),
                           "decoder_attentions": random_stack(rng, 2, 2, t, t, causal=True),
                           "cross_attentions": random_stack(rng, 2, 2, t, s)},
                   target=" ".join(ko), decoder_inputs=dec_in, outputs=out, output_text=" ".join(ko), generated=True,
                   prediction=Prediction(task="translation", text=" ".join(ko)))


def short_seq2seq() -> Capture:
    """Two words each way: the figures' smallest sizes."""
    src = token_seq(["Hello", "!", "</s>"], special=[False, False, True])
    dec_in = token_seq(["<pad>", "안녕", "!"], special=[True, False, False])
    out = token_seq(["안녕", "!", "</s>"], special=[False, False, True])
    rng = np.random.default_rng(8)
    return Capture(model="m", kind="seq2seq", architecture="MarianMTModel", text="Hello !", source=src,
                   stacks={"encoder_attentions": random_stack(rng, 2, 2, 3, 3),
                           "decoder_attentions": random_stack(rng, 2, 2, 3, 3, causal=True),
                           "cross_attentions": random_stack(rng, 2, 2, 3, 3)},
                   target="안녕 !", decoder_inputs=dec_in, outputs=out, output_text="안녕 !", generated=True,
                   prediction=Prediction(task="translation", text="안녕 !"))


def _masked(a: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """``a`` renormalised over the keys ``seen`` (what an attention mask does)."""
    a = a * seen
    return (a / a.sum(-1, keepdims=True)).astype(np.float32)


def padding_report(kind: str = "encoder", n: int = 5, pads: int = 2, side: str = "right", t: int = 4) -> PaddingReport:
    """A padding experiment of ``n`` real tokens padded by ``pads`` (seeded numbers): an encoder's
    one stack, or a translator's three (a target of ``t`` tokens)."""
    rng = np.random.default_rng(11 + n)
    sb = n + pads
    if kind == "encoder":
        real_toks = ["[CLS]", *_korean(n - 2), "[SEP]"]
        pad_tok, dec = "[PAD]", ()
    else:
        real_toks = [*(f"w{i}" for i in range(n - 1)), "</s>"]
        pad_tok, dec = "<pad>", ("<pad>", *_korean(t - 1))
    pad_at = tuple(range(n, sb)) if side == "right" else tuple(range(pads))
    real = tuple(i for i in range(sb) if i not in pad_at)
    toks = [pad_tok] * sb
    for i, tok in zip(real, real_toks, strict=True):
        toks[i] = tok
    mask = np.ones((2, sb), np.int64)
    mask[0, list(pad_at)] = 0
    shapes = ({"attentions": (sb, sb)} if kind == "encoder" else
              {"encoder_attentions": (sb, sb), "decoder_attentions": (t, t), "cross_attentions": (t, sb)})
    alone_shapes = {k: (n if q == sb else q, n if k_ == sb else k_) for k, (q, k_) in shapes.items()}
    unmasked = {k: random_stack(rng, 2, 2, q, k_, causal=k == "decoder_attentions") for k, (q, k_) in shapes.items()}
    seen = mask[0].astype(np.float32)
    masked = {k: (_masked(a, seen) if a.shape[-1] == sb else a) for k, a in unmasked.items()}
    alone = {k: random_stack(rng, 2, 2, q, k_, causal=k == "decoder_attentions") for k, (q, k_) in alone_shapes.items()}
    delta = {k: (rng.standard_normal(a.shape) * 0.05).astype(np.float32) for k, a in alone.items()}
    outputs = ("last_hidden_state",) if kind == "encoder" else ("encoder_last_hidden_state", "decoder_last_hidden_state")
    return PaddingReport(
        model="toy-bert" if kind == "encoder" else "toy-marian", kind=kind, text=" ".join(real_toks[1:-1]),
        pair=" ".join(_korean(sb)), padding_side=side, pad_token=pad_tok, pad_token_id=0, row=0, tokens=tuple(toks),
        pair_tokens=tuple(_korean(sb)), pad_positions=pad_at, real_positions=real, attention_mask=mask,
        position_ids=None, target=None if kind == "encoder" else "나는 이 강의를", decoder_tokens=dec,
        alone=alone, masked=masked, unmasked=unmasked, delta_masked={k: d * 1e-4 for k, d in delta.items()},
        delta_unmasked=delta, pad_attention_max=0.0, unmasked_pad_attention_mass=0.21,
        masked_attention_max_abs_diff=3.2e-7, unmasked_attention_max_abs_diff=0.134,
        masked_output_max_abs_diff=4.1e-6, unmasked_output_max_abs_diff=0.87,
        cross_pad_attention_max=None if kind == "encoder" else 0.0, output_scale=5.5,
        stack_diffs={k: {"masked": 3.2e-7, "unmasked": 0.134} for k in shapes},
        output_diffs={o: {"masked": 4.1e-6, "unmasked": 0.87} for o in outputs},
        prediction_task="masked_lm" if kind == "encoder" else "translation",
        prediction_alone=("나는", "이"), prediction_masked=("나는", "이"), prediction_unmasked=("나는", "그"),
        prediction_changed_masked=False, prediction_changed_unmasked=True,
        masked_logits_max_abs_diff=1e-5, unmasked_logits_max_abs_diff=2.5,
        notes=("the model's positions were passed for the padded row",))


def masking_report(kind: str = "decoder") -> MaskingReport:
    """Tokens 2 and 3 of a sentence hidden (seeded numbers): a decoder's next-token top-5, or an
    encoder's fill-mask predictions, and the hidden-state distances."""
    rng = np.random.default_rng(21)
    toks = (("<s>", "The", "cat", "sat", "on", "the", "mat") if kind == "decoder"
            else ("[CLS]", "나는", "이", "[MASK]", "좋아한다", "[SEP]"))
    n = len(toks)
    hidden = (2, 3) if kind == "decoder" else (2,)
    mask = np.ones(n, np.int64)
    mask[list(hidden)] = 0
    base = random_stack(rng, 2, 2, n, n, causal=kind == "decoder")
    after = _masked(base, mask.astype(np.float32))
    visible = tuple(i for i in range(n) if i not in hidden)
    l2 = rng.random(len(visible)).astype(np.float32)
    cos = (rng.random(len(visible)) * 0.1).astype(np.float32)
    extra: dict = {}
    if kind == "decoder":
        extra = {"top5_before": (("on", 0.41), ("down", 0.2), ("in", 0.1), ("up", 0.05), ("by", 0.01)),
                 "top5_after": (("the", 0.3), ("on", 0.25), ("a", 0.1), ("in", 0.07), ("to", 0.02))}
    else:
        extra = {"prediction_before": Prediction("masked_lm", (("강의를", 0.6),), "", ((3, (("강의를", 0.6), ("책을", 0.2))),)),
                 "prediction_after": Prediction("masked_lm", (("책을", 0.4),), "", ((3, (("책을", 0.4), ("강의를", 0.3))),))}
    return MaskingReport(
        model="toy-gpt" if kind == "decoder" else "toy-bert", kind=kind, text=" ".join(toks[1:]), tokens=toks,
        masked_positions=hidden, attention_mask=mask, blind_rows={"attentions": ()}, target=None, decoder_tokens=(),
        baseline={"attentions": base}, masked={"attentions": after}, delta={"attentions": after - base},
        masked_column_max=0.0, hidden_positions=visible, hidden_l2=l2, hidden_cosine_distance=cos,
        mean_hidden_l2=float(l2.mean()), mean_hidden_cosine_distance=float(cos.mean()), **extra)


def mask_cases() -> list[tuple[str, str, ViewSpec, ViewInputs]]:
    """The mask lab: padding (encoder, translator's three stacks, left padding, a long sentence) and
    token masking (decoder, fill-mask), one head and the layer's mean, every theme, an own title."""
    enc, s2s = padding_report("encoder"), padding_report("seq2seq")
    long, left = padding_report("encoder", n=34, pads=6), padding_report("encoder", side="left")
    dec, mlm = masking_report("decoder"), masking_report("encoder")
    masks = ViewSpec(view="masks")
    out = [
        ("encoder/masks/padding", "encoder", masks, enc),
        ("encoder/masks/padding/one-head", "encoder", replace(masks, layer=1, head=1), enc),
        ("encoder/masks/padding/left", "encoder", masks, left),
        ("long-encoder/masks/padding", "long-encoder", masks, long),
        ("encoder/masks/padding/own-title", "encoder", replace(masks, title="T"), enc),
        ("decoder/masks/tokens", "decoder", masks, dec),
        ("decoder/masks/tokens/one-head", "decoder", replace(masks, head=0), dec),
        ("encoder/masks/tokens", "encoder", masks, mlm),
        *((f"seq2seq/masks/padding/{stack}", "seq2seq", replace(masks, stack=stack), s2s)
          for stack in ("encoder", "decoder", "cross")),
        # more target rows than fit, fewer than the source's columns: each axis thinned by its own length
        ("long-seq2seq/masks/padding/cross", "long-seq2seq", replace(masks, stack="cross"),
         padding_report("seq2seq", n=44, pads=8, t=36)),
        *((f"encoder/masks/padding/{theme}", "encoder", replace(masks, theme=theme), enc)
          for theme in ("dark", "presentation")),
        ("decoder/masks/tokens/dark", "decoder", replace(masks, theme="dark"), dec),
    ]
    return [(name, kind, spec, ViewInputs(mask_report=report)) for name, kind, spec, report in out]


def cases() -> dict[str, dict]:
    caps = {"encoder": make_encoder(), "decoder": make_decoder(), "seq2seq": make_seq2seq(),
            "long-encoder": long_encoder(), "long-decoder": long_decoder(), "long-seq2seq": long_seq2seq(),
            "short-seq2seq": short_seq2seq()}
    specs: list[tuple[str, str, ViewSpec, ViewInputs | None]] = []
    # (the mask lab's cases, synthetic reports, are below: ``applicable`` runs a real model's)
    views = {kind: [(spec, inputs) for spec, inputs in applicable(cap, None) if spec.view != "masks"]
             for kind, cap in caps.items()}
    for kind in caps:
        specs += [(f"{kind}/{spec.view}", kind, spec, inputs) for spec, inputs in views[kind]]
        specs += [
            (f"{kind}/head/hidden-renormalised", kind, ViewSpec(view="head", hide_special=True, renormalize=True), None),
            (f"{kind}/head/log", kind, ViewSpec(view="head", scale="log"), None),
            (f"{kind}/layer/one-head", kind, ViewSpec(view="layer", layer=1, head=1), None),
            (f"{kind}/stats/one-head", kind, ViewSpec(view="stats", layer=1, head=1), None),
        ]
        if not kind.startswith("long"):  # a short title of one's own: the figure is as wide as its content asks
            specs += [(f"{kind}/{spec.view}/own-title", kind, replace(spec, title="T"), inputs)
                      for spec, inputs in views[kind]]
            specs.append((f"{kind}/model/layer1-head1", kind, ViewSpec(view="model", layer=1, head=1), None))
    for theme in ("dark", "presentation"):
        for kind, themed in (("encoder", ("head", "layer", "stats", "lines")), ("seq2seq", ("alignment", "steps"))):
            specs += [(f"{kind}/{spec.view}/{theme}", kind, replace(spec, theme=theme), inputs)
                      for spec, inputs in views[kind] if spec.view in themed]
    caps["named-encoder"] = replace(make_encoder(), model="sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2")
    caps["longer-encoder"] = long_encoder(80)  # the rollout bar's labels thinned (the widest figure is capped)
    specs += [
        ("seq2seq/head/cross", "seq2seq", ViewSpec(view="head", stack="cross"), None),
        ("seq2seq/head/decoder/no-grey-mask", "seq2seq",
         ViewSpec(view="head", stack="decoder", show_causal_mask=False), None),
        ("seq2seq/steps/3", "seq2seq", ViewSpec(view="steps", step=3), None),
        ("seq2seq/steps/last", "seq2seq", ViewSpec(view="steps", step=5), None),
        ("long-seq2seq/steps/20", "long-seq2seq", ViewSpec(view="steps", step=20), None),
        ("decoder/lines/per-head", "decoder", ViewSpec(view="lines", lines_per_head=True, layer=1), None),
        ("long-encoder/lines/per-head", "long-encoder", ViewSpec(view="lines", lines_per_head=True), None),
        ("encoder/head/shared-range", "encoder", ViewSpec(view="head", layer=2, shared_range=True), None),
        # a statistic that cross-attention does not have (no position of its own): every cell NaN
        ("seq2seq/stats/cross-to-self", "seq2seq", ViewSpec(view="stats", stack="cross", stat="to_self"), None),
        ("seq2seq/head/cross/caption", "seq2seq", ViewSpec(view="head", stack="cross", caption=True), None),
        ("decoder/rollout/position-2", "decoder", ViewSpec(view="rollout", position=2, through_layer=0), None),
        ("encoder/head/figsize", "encoder", ViewSpec(view="head", figsize=(5.0, 4.0), dpi=100), None),
        # two captures of different tokens: side by side, no difference map, a note says why
        ("encoder/compare/other-tokens", "encoder", ViewSpec(view="compare", head=None),
         ViewInputs(compare_with=long_encoder())),
        ("seq2seq/compare/other-tokens", "seq2seq", ViewSpec(view="compare", stack="cross", head=None),
         ViewInputs(compare_with=short_seq2seq())),
        # model names longer than a panel: the panels widen to hold their titles
        ("named-encoder/compare/long-names", "named-encoder", ViewSpec(view="compare", head=None),
         ViewInputs(compare_with=replace(make_encoder(), model="Helsinki-NLP/opus-mt-tc-big-ko-en-finetuned"))),
        ("longer-encoder/rollout", "longer-encoder", ViewSpec(view="rollout"), None),
        *mask_cases(),
    ]
    return {name: signature(build_figure(caps[kind], spec, inputs)) for name, kind, spec, inputs in specs}


@pytest.fixture(scope="module")
def got() -> dict[str, dict]:
    with fonts_of_a_fresh_machine():  # the golden's fonts, whatever CJK fonts this machine has
        return cases()


def test_the_cases_cover_every_view(got):
    assert {name.split("/")[1] for name in got} == set(VIEWS)


def _differences(now, expected, where: str = "") -> list[str]:
    if isinstance(now, dict) and isinstance(expected, dict):
        out = [f"{where}/{k}: only {'now' if k in now else 'expected'}" for k in sorted(set(now) ^ set(expected))]
        for k in sorted(set(now) & set(expected)):
            out += _differences(now[k], expected[k], f"{where}/{k}")
        return out
    if isinstance(now, list) and isinstance(expected, list) and len(now) == len(expected):
        return [d for i, (a, b) in enumerate(zip(now, expected, strict=True)) for d in _differences(a, b, f"{where}[{i}]")]
    return [] if now == expected else [f"{where}: now {now!r}, expected {expected!r}"]


def test_every_figure_is_drawn_as_checked(got):
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert sorted(got) == sorted(golden)
    found = _differences(json.loads(json.dumps(got)), golden)
    assert not found, f"{len(found)} differences, the first:\n" + "\n".join(found[:25])


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    with fonts_of_a_fresh_machine():
        recorded = cases()
    GOLDEN.write_text(json.dumps(recorded, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n",
                      encoding="utf-8")
    print(f"wrote {GOLDEN}")
