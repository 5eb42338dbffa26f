"""analysis.figures / analysis.themes: every view builds, exports are valid and atomic."""

from __future__ import annotations

import io
import struct
import warnings
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm, to_rgba
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from analysis import figures
from analysis.aggregate import hide_tokens, select_map
from analysis.errors import ExportError, InputError
from analysis.figures import (
    GID_ATTENTION,
    GID_LINES,
    GID_MASK,
    GID_MASK_HATCH,
    GID_SELECTED,
    ViewSpec,
    build_figure,
    export_all_layers,
    export_figure,
    validate_spec,
)
from analysis.result import Capture
from analysis.themes import DARK, THEMES, Theme, apply_theme, get_theme
from analysis.views.spec import check_options
from tests.test_aggregate import make_decoder, make_encoder, make_seq2seq, random_stack, token_seq

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def capture_of(tokens, *, special=None, layers: int = 1, heads: int = 1, seed: int = 0, kind: str = "encoder",
               text: str = "") -> Capture:
    """A capture of random (seeded) rows over ``tokens``: causal for a decoder."""
    rng = np.random.default_rng(seed)
    n = len(tokens)
    return Capture(model="m", kind=kind, architecture="A", text=text, source=token_seq(tokens, special=special),
                   stacks={"attentions": random_stack(rng, layers, heads, n, n, causal=kind == "decoder")})


def drawn(fig: Figure) -> Figure:
    FigureCanvasAgg(fig).draw()
    return fig


def images(fig: Figure, gid: str) -> list[AxesImage]:
    return [im for ax in fig.axes for im in ax.images if im.get_gid() == gid]


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


# -- every view × theme -----------------------------------------------------------------------
@pytest.mark.parametrize("theme", sorted(THEMES))
@pytest.mark.parametrize(
    ("maker", "view", "stack"),
    [
        (make_encoder, "head", None),
        (make_decoder, "layer", None),
        (make_seq2seq, "model", "decoder"),
        (make_seq2seq, "lines", "cross"),
        (make_seq2seq, "alignment", None),
    ],
)
def test_every_view_and_theme_builds_without_warnings(maker, view, stack, theme):
    if view == "alignment":
        pytest.importorskip("analysis.alignment")
    spec = ViewSpec(
        view=view,
        stack=stack,
        theme=theme,
        head=None,
        hide_special=True,
        renormalize=True,
        row_labels="both",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Glyph … missing from font(s)"
        fig = drawn(build_figure(maker(), spec))
    assert isinstance(fig, Figure) and fig.axes
    assert fig.get_facecolor() == to_rgba(THEMES[theme].figure_facecolor)


def test_dark_theme_colours_are_applied(tmp_path):
    cap = make_encoder()
    fig = drawn(build_figure(cap, ViewSpec(theme="dark")))
    ax = fig.axes[0]
    assert fig.get_facecolor() == to_rgba(DARK.figure_facecolor)
    assert ax.get_facecolor() == to_rgba(DARK.axes_facecolor)
    assert ax.xaxis.label.get_color() == DARK.text_color
    assert all(t.get_color() == DARK.text_color for t in ax.get_xticklabels())
    assert images(fig, GID_ATTENTION)[0].get_cmap().name.startswith("magma")
    # and in the written file: the corner pixel has the dark background
    path = export_figure(cap, ViewSpec(theme="dark", dpi=72), tmp_path / "dark.png")
    import matplotlib.image as mpimg

    px = mpimg.imread(path)[1, 1, :3]
    np.testing.assert_allclose(px, to_rgba(DARK.figure_facecolor)[:3], atol=1 / 255)


def test_presentation_theme_has_large_ticks_and_get_theme_errors():
    assert THEMES["presentation"].tick_size >= 16
    assert get_theme("light") is THEMES["light"]
    assert isinstance(get_theme(DARK), Theme)
    with pytest.raises(InputError, match="light, dark, presentation"):
        get_theme("neon")
    assert set(DARK.qt_palette) >= {"window", "base", "text", "highlight"}
    assert all(v.startswith("#") for v in DARK.qt_palette.values())


def test_a_themes_palette_is_its_own_and_read_only():
    """A theme keeps a read-only copy of the palette it was made with: changing the dict given,
    or the theme's own, changes no window colour."""
    from dataclasses import replace as replace_theme

    given = dict(DARK.qt_palette)
    theme = replace_theme(DARK, name="mine", qt_palette=given)
    given["window"] = "#ff0000"
    assert theme.qt_palette["window"] == DARK.qt_palette["window"] != "#ff0000"
    with pytest.raises(TypeError):
        theme.qt_palette["window"] = "#00ff00"  # type: ignore[index]


def test_apply_theme_recolours_an_existing_figure():
    fig = build_figure(make_encoder(), ViewSpec(theme="light"))
    apply_theme(fig, "dark")
    assert fig.get_facecolor() == to_rgba(DARK.figure_facecolor)
    assert all(ax.get_facecolor() == to_rgba(DARK.axes_facecolor) for ax in fig.axes)


# -- contents of the views --------------------------------------------------------------------
def test_head_view_shows_the_processed_map_and_title_notes():
    cap = make_encoder()
    spec = ViewSpec(layer=1, head=None, aggregation="max", hide_special=True, renormalize=True)
    fig = build_figure(cap, spec)
    keep = ~cap.source.special
    expected, _, _ = hide_tokens(select_map(cap, None, 1, None, "max"), keep, keep, True)
    (im,) = images(fig, GID_ATTENTION)
    np.testing.assert_allclose(im.get_array(), expected)
    ax = fig.axes[0]
    title = fig.get_suptitle()
    assert "(special tokens hidden, rows renormalised)" in title
    assert "max of 4 heads" in title and "toy-bert" in title
    assert [t.get_text() for t in ax.get_xticklabels()] == ["나는", "이", "강의를", "좋아한다"]
    plain = build_figure(cap, replace(spec, renormalize=False))
    assert "(special tokens hidden, rows not renormalised)" in plain.get_suptitle()


def test_row_label_modes_for_cross_attention():
    cap = make_seq2seq()
    for mode, first in [("input", "<pad>"), ("output", "나는"), ("both", "<pad> → 나는")]:
        fig = build_figure(cap, ViewSpec(stack="cross", row_labels=mode))
        assert fig.axes[0].get_yticklabels()[0].get_text() == first


@pytest.mark.parametrize(
    ("mode", "rows"),
    [
        ("input", ["나는", "이", "강의를", "정말", "좋아한다"]),  # <pad> (start) hidden
        ("output", ["나는", "이", "강의를", "정말", "좋아한다"]),  # </s> hidden
        (
            "both",
            [
                "<pad> → 나는",
                "나는 → 이",
                "이 → 강의를",
                "강의를 → 정말",
                "정말 → 좋아한다",
                "좋아한다 → </s>",
            ],
        ),
    ],
)
def test_hidden_rows_follow_the_row_label_mode(mode, rows):
    cap = make_seq2seq()
    fig = build_figure(cap, ViewSpec(stack="cross", row_labels=mode, hide_special=True))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == rows
    cols = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert cols == ["I", "really", "like", "this", "course", "."]


def mask_patches(fig, gid: str) -> list:
    return [p for ax in fig.axes for p in ax.patches if p.get_gid() == gid and p.get_visible()]


def path_area(path) -> float:
    area = 0.0
    for poly in path.to_polygons():
        x, y = poly[:, 0], poly[:, 1]
        area += 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    return area


def cells_covered(path, shape) -> np.ndarray:
    ii, jj = np.mgrid[0 : shape[0], 0 : shape[1]]
    return path.contains_points(np.stack([jj.ravel(), ii.ravel()], 1)).reshape(shape)


@pytest.mark.parametrize("hide", [False, True])
def test_causal_mask_overlay_covers_exactly_the_future_cells(hide):
    cap = make_decoder()
    fig = drawn(build_figure(cap, ViewSpec(head=1, hide_special=hide, renormalize=hide)))
    (overlay,) = mask_patches(fig, GID_MASK)
    rows = np.flatnonzero(~cap.source.special) if hide else np.arange(7)
    expected = rows[None, :] > rows[:, None]
    np.testing.assert_array_equal(cells_covered(overlay.get_path(), expected.shape), expected)
    assert path_area(overlay.get_path()) == pytest.approx(expected.sum())
    # the grey is not a colour of the colormap's low end (so it never reads as "near zero")
    assert tuple(overlay.get_facecolor()) == pytest.approx(to_rgba(get_theme("light").masked_color))
    # the hatch covers the same cells
    (hatch,) = mask_patches(fig, GID_MASK_HATCH)
    assert path_area(hatch.get_path()) == pytest.approx(expected.sum())
    assert hatch.get_hatch() == "///"


def test_no_mask_overlay_for_non_causal_or_when_turned_off():
    assert not mask_patches(build_figure(make_encoder(), ViewSpec()), GID_MASK)
    assert not mask_patches(build_figure(make_seq2seq(), ViewSpec(stack="cross")), GID_MASK)
    assert not mask_patches(build_figure(make_decoder(), ViewSpec(show_causal_mask=False)), GID_MASK)
    assert mask_patches(build_figure(make_seq2seq(), ViewSpec(stack="decoder")), GID_MASK)


def tile(mos_image: np.ndarray, mos, r: int, c: int) -> np.ndarray:
    h, w = mos.cell
    y, x = r * (h + mos.gap), c * (w + mos.gap)
    return mos_image[y : y + h, x : x + w]


def test_layer_view_is_one_image_of_every_head_with_one_colour_bar():
    from analysis.views.overview import layer_data

    cap = make_encoder()
    spec = ViewSpec(view="layer", layer=2, head=1)
    fig = build_figure(cap, spec)
    (im,) = images(fig, GID_ATTENTION)
    assert len(fig.axes) == 2  # the image + its colour bar, never one axes per head
    mos = layer_data(cap, spec).mosaic
    shown = np.asarray(np.ma.filled(im.get_array(), np.nan))
    for h in range(4):
        r, c = divmod(h, mos.cols)
        np.testing.assert_array_equal(tile(shown, mos, r, c), cap.stacks["attentions"][2, h])
    assert [t.get_text() for t in fig.axes[0].texts] == ["H0", "H1", "H2", "H3"]
    # the selected head is outlined
    (marker,) = mask_patches(fig, GID_SELECTED)
    x0, y0 = marker.get_xy()
    assert (x0 + 0.5, y0 + 0.5) == (1 * (mos.cell[1] + mos.gap), 0)
    assert fig.axes[1].get_ylabel() == "attention weight"


def test_model_view_is_one_image_with_every_tile():
    from analysis.views.overview import model_data

    cap = make_seq2seq()
    arr = cap.stacks["encoder_attentions"]  # [2, 4, 7, 7]
    spec = ViewSpec(view="model", stack="encoder", layer=1, head=2)
    fig = build_figure(cap, spec)
    (im,) = images(fig, GID_ATTENTION)
    assert len(fig.axes) == 2  # the image + its colour bar, never one axes per head
    mos = model_data(cap, spec).mosaic
    shown = np.asarray(np.ma.filled(im.get_array(), np.nan))
    n_layers, n_heads = arr.shape[:2]
    for layer in range(n_layers):
        for h in range(n_heads):
            np.testing.assert_allclose(tile(shown, mos, layer, h), arr[layer, h], rtol=1e-6)
    assert np.isnan(shown[mos.cell[0], :]).all()  # the gap between layer rows
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["L0", "L1"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["H0", "H1", "H2", "H3"]
    assert ax.get_xlabel() == "head" and ax.get_ylabel() == "layer"
    (marker,) = mask_patches(fig, GID_SELECTED)
    x0, y0 = marker.get_xy()
    assert (x0 + 0.5, y0 + 0.5) == (2 * (mos.cell[1] + mos.gap), 1 * (mos.cell[0] + mos.gap))


def test_model_view_pools_long_sequences():
    from analysis.views.overview import MODEL_MAX_CELL

    cap = capture_of([f"t{i}" for i in range(300)], layers=12, heads=12, seed=3, text="x")
    fig = build_figure(cap, ViewSpec(view="model"))
    (im,) = images(fig, GID_ATTENTION)
    assert max(im.get_array().shape) <= 12 * (MODEL_MAX_CELL + 7)


def test_lines_view_draws_lines_proportional_to_attention():
    cap = make_encoder()
    fig = build_figure(cap, ViewSpec(view="lines", head=2))
    (lines,) = [
        c
        for c in fig.axes[0].collections
        if isinstance(c, LineCollection) and c.get_gid() == GID_LINES
    ]
    m = select_map(cap, None, 0, 2)
    w = m / m.max()
    assert len(lines.get_segments()) == int((w >= 0.02).sum())
    alphas = lines.get_colors()[:, 3]
    strongest = lines.get_segments()[int(np.argmax(alphas))]
    ys = np.linspace(1.0, 0.0, m.shape[0])
    i, j = int(np.argmin(abs(ys - strongest[0][1]))), int(np.argmin(abs(ys - strongest[1][1])))
    assert (i, j) == np.unravel_index(np.argmax(m), m.shape)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "강의를" in texts and "[CLS]" in texts


def test_alignment_view_draws_the_pairs_of_word_alignment():
    alignment = pytest.importorskip("analysis.alignment")
    cap = make_seq2seq()
    spec = ViewSpec(view="alignment", alignment_layer=1, alignment_head=None)
    fig = build_figure(cap, spec)
    res = alignment.word_alignment(
        cap.attention("cross"), cap.source.word_ids, cap.outputs.word_ids, 1, None
    )
    (lines,) = [c for c in fig.axes[0].collections if c.get_gid() == figures.GID_ALIGNMENT]
    assert len(lines.get_segments()) == len(res.pairs)
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"really", "course", "강의를", "좋아한다"} <= texts
    assert "layer 1" in fig.get_suptitle()


def test_long_sequences_thin_labels_and_bound_the_size():
    n = 150
    toks = [f"tok{i}" if i % 3 else "강의를" for i in range(n)]
    cap = capture_of(toks, heads=2, seed=4, kind="decoder", text=" ".join(toks))
    fig = build_figure(cap, ViewSpec())
    ax = fig.axes[0]
    labels = ax.get_xticklabels()
    assert 20 <= len(labels) < n
    assert max(fig.get_size_inches()) <= 20
    small = build_figure(make_encoder(), ViewSpec())
    assert len(small.axes[0].get_xticklabels()) == 6


def test_shared_and_log_colour_ranges():
    cap = make_encoder()
    arr = cap.stacks["attentions"]
    per_view = images(build_figure(cap, ViewSpec(layer=0, head=0)), GID_ATTENTION)[0].norm
    shared_fig = build_figure(cap, ViewSpec(layer=0, head=0, shared_range=True))
    shared = images(shared_fig, GID_ATTENTION)[0].norm
    assert per_view.vmax == pytest.approx(float(arr[0, 0].max()))
    assert shared.vmax == pytest.approx(float(arr.max()))
    log = images(build_figure(cap, ViewSpec(scale="log")), GID_ATTENTION)[0].norm
    assert isinstance(log, LogNorm) and log.vmin >= 1e-4


def test_dollar_signs_in_tokens_are_not_mathtext():
    cap = capture_of(["$", "$x$", "price$", r"\alpha"], seed=6)
    fig = drawn(build_figure(cap, ViewSpec()))
    assert fig.axes[0].get_xticklabels()[1].get_text() == r"\$x\$"


# -- validation -------------------------------------------------------------------------------
_NOT_SEQ2SEQ = ("the alignment view needs a seq2seq model with cross-attention; this is {} model ({}): load a "
                "translator (e.g. bundled:translator-en-fr), or choose the head, layer, model or lines view")
_HEAD_9 = "head 9 is out of range: this stack has heads 0–3 (or none for the aggregate over heads)"


@pytest.mark.parametrize(
    ("maker", "spec", "message"),
    [
        (make_encoder, ViewSpec(layer=7), "layer 7 is out of range: this stack has layers 0–2"),
        (make_encoder, ViewSpec(head=9), _HEAD_9),
        (make_encoder, ViewSpec(view="lines", layer=-1), "layer -1 is out of range: this stack has layers 0–2"),
        (make_encoder, ViewSpec(view="layer", layer=3), "layer 3 is out of range: this stack has layers 0–2"),
        (make_encoder, ViewSpec(view="compare", layer=3), "layer 3 is out of range: this stack has layers 0–2"),
        (make_encoder, ViewSpec(figsize=(100.5, 1)), "figsize (100.5, 1) is out of range: choose 0.5–100 inches per side"),
        (make_encoder, ViewSpec(figsize=(1, 100.5)), "figsize (1, 100.5) is out of range: choose 0.5–100 inches per side"),
        (make_encoder, ViewSpec(figsize=(0.4, 1)), "figsize (0.4, 1) is out of range: choose 0.5–100 inches per side"),
        (make_encoder, ViewSpec(view="alignment"), _NOT_SEQ2SEQ.format("an encoder", "BertModel")),
        (make_decoder, ViewSpec(view="alignment"), _NOT_SEQ2SEQ.format("a decoder", "GPT2LMHeadModel")),
        (make_seq2seq, ViewSpec(view="alignment", alignment_layer=5), "layer 5 is out of range: this stack has layers 0–1"),
        (make_seq2seq, ViewSpec(view="steps", head=9), _HEAD_9),
        (make_encoder, ViewSpec(view="rollout", through_layer=3), "layer 3 is out of range: this stack has layers 0–2"),
        (make_encoder, ViewSpec(view="flow", through_layer=-1), "layer -1 is out of range: this stack has layers 0–2"),
        (make_encoder, ViewSpec(stack="cross"), "this encoder model has no 'cross' stack; choose one of: attentions"),
        (make_encoder, ViewSpec(view="sankey"),
         "unknown view 'sankey': choose one of head, layer, model, lines, alignment, steps, masks, stats, rollout, "
         "flow, compare"),
        (make_encoder, ViewSpec(theme="neon"), "unknown theme 'neon': choose one of light, dark, presentation"),
        (make_encoder, ViewSpec(cmap="nope"),
         "unknown colormap 'nope': use a matplotlib colormap such as viridis, magma or Blues"),
        (make_encoder, ViewSpec(dpi=1000), "dpi 1000 is out of range: choose a whole number from 72 to 600"),
        (make_encoder, ViewSpec(dpi=50), "dpi 50 is out of range: choose a whole number from 72 to 600"),
        (make_encoder, ViewSpec(scale="sqrt"), "unknown colour scale 'sqrt': choose one of linear, log"),
        (make_encoder, ViewSpec(row_labels="middle"),
         "unknown row label mode 'middle': choose one of input, predicts, both"),
    ],
)
def test_validate_spec_errors(maker, spec, message):
    assert _spec_error(maker(), spec) == message



@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ViewSpec(view="alignment", alignment_head=4), _HEAD_9.replace("9", "4")),
        (ViewSpec(view="alignment", alignment_threshold=0.0),
         "the alignment threshold 0.0 is out of range: choose a share P with 0 < P ≤ 1"),
        (ViewSpec(view="alignment", alignment_method="shift", alignment_threshold=1.5),
         "the alignment threshold 1.5 is out of range: choose a share P with 0 < P ≤ 1"),
    ],
)
def test_alignment_options_out_of_range(spec, message):
    assert _spec_error(make_seq2seq(), spec) == message


def test_alignment_of_a_one_layer_model_with_one_word_on_each_side():
    """The default alignment layer is 0 (a one-layer translator has nothing else), and a sentence
    whose only word is word 0 on each side still has something to align."""
    cap = make_seq2seq()
    one_layer = replace(cap, stacks={k: v[:1] for k, v in cap.stacks.items()})
    assert validate_spec(one_layer, ViewSpec(view="alignment")) == "cross_attentions"
    only_first = replace(
        cap,
        source=replace(cap.source, word_ids=(0,) + (-1,) * (len(cap.source) - 1)),
        outputs=replace(cap.outputs, word_ids=(0,) + (-1,) * (len(cap.outputs) - 1)),
    )
    assert validate_spec(only_first, ViewSpec(view="alignment")) == "cross_attentions"



@pytest.mark.parametrize("side", ["decoder_inputs", "source"])
def test_hiding_special_tokens_refuses_a_cross_map_with_one_side_all_special(side):
    """Cross-attention whose rows (decoder inputs) or columns (source) are all special tokens has
    nothing left once they are hidden, though the other side has words."""
    cap = make_seq2seq()
    seq = getattr(cap, side)
    cap = replace(cap, **{side: replace(seq, special=np.ones(len(seq), dtype=bool))})
    assert _spec_error(cap, ViewSpec(stack="cross", hide_special=True)) == (
        "every token is a special token, so hiding them leaves nothing to show; show special tokens")
    assert validate_spec(cap, ViewSpec(stack="cross")) == "cross_attentions"  # shown, they are fine


def test_for_spec_groups_the_capture_and_the_pinned_one_alike():
    """Words: the capture and the Compare view's capture A both at word level; pieces (or a
    grouping it does not know, refused elsewhere): both as given."""
    from types import SimpleNamespace

    from analysis.views.spec import ViewInputs, for_spec

    b, a = make_encoder(seed=1), make_encoder(seed=2)
    got, inputs = for_spec(b, ViewSpec(view="compare", group="words"), ViewInputs(compare_with=a))
    assert got.group == inputs.compare_with.group == "words"
    assert got.pieces is b and inputs.compare_with.pieces is a
    for group in ("pieces", "letters"):
        same, same_inputs = for_spec(b, ViewSpec(group=group), ViewInputs(compare_with=a))
        assert same is b and same_inputs.compare_with is a
    # duck-typed inputs without compare_with (scripts) pass through
    duck = SimpleNamespace(mask_report=None)
    assert for_spec(b, ViewSpec(group="words"), duck)[1] is duck

def test_is_seq2seq_needs_every_part_of_a_translation():
    """Cross- and decoder attention, decoder inputs and outputs, and the seq2seq kind: without any
    one of them the translation views are refused."""
    from types import SimpleNamespace

    from analysis.views.spec import is_seq2seq

    whole = {"kind": "seq2seq", "stacks": {"cross_attentions": 1, "decoder_attentions": 1},
             "outputs": (), "decoder_inputs": ()}
    assert is_seq2seq(SimpleNamespace(**whole)) and not is_seq2seq(None)
    for missing in (dict(kind="decoder"), dict(stacks={"decoder_attentions": 1}),
                    dict(stacks={"cross_attentions": 1}), dict(outputs=None), dict(decoder_inputs=None)):
        assert not is_seq2seq(SimpleNamespace(**{**whole, **missing})), missing

def test_the_ends_of_every_range_are_accepted():
    """Residual weights 0 and 1, the last layer to roll out through, the last step and head of
    the steps view: inside their ranges."""
    enc, s2s = make_encoder(), make_seq2seq()
    for residual in (0, 0.0, 1, 1.0):
        assert validate_spec(enc, ViewSpec(view="rollout", residual=residual)) == "attentions"
    assert validate_spec(enc, ViewSpec(view="flow", through_layer=2)) == "attentions"
    assert validate_spec(s2s, ViewSpec(view="steps", step=5, head=3)) == "cross_attentions"
    for position in (0, 5):
        assert validate_spec(enc, ViewSpec(view="flow", position=position)) == "attentions"
    at_limit = capture_of([f"t{i}" for i in range(64)], seed=3)  # flow's limit is 64 tokens
    assert validate_spec(at_limit, ViewSpec(view="flow")) == "attentions"
    # display options: dpi 72–600, figure sides 0.5–100 inches, a known colormap
    for spec in (ViewSpec(dpi=72), ViewSpec(dpi=600), ViewSpec(figsize=(0.5, 0.5)), ViewSpec(figsize=(1.0, 100)),
                 ViewSpec(figsize=(100, 0.5)), ViewSpec(cmap="magma")):
        assert validate_spec(enc, spec) == "attentions", spec
    # the layer view shows every head: a head number it does not use is not checked
    assert validate_spec(enc, ViewSpec(view="layer", head=9)) == "attentions"


def test_validate_spec_resolves_aliases():
    cap = make_seq2seq()
    assert validate_spec(cap, ViewSpec(stack="cross")) == "cross_attentions"
    assert validate_spec(cap, ViewSpec(view="alignment")) == "cross_attentions"
    assert (
        validate_spec(make_encoder(), ViewSpec(view="model", layer=99)) == "attentions"
    )  # layer unused


# -- export -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dpi", [72, 150, 300])
def test_png_export_signature_and_pixel_size(tmp_path, dpi):
    cap = make_encoder()
    spec = ViewSpec(dpi=dpi)
    path = export_figure(cap, spec, tmp_path / "head.png")
    assert path == tmp_path / "head.png"
    w, h = png_size(path.read_bytes())
    fw, fh = build_figure(cap, spec).get_size_inches()
    # matplotlib truncates size × dpi to whole pixels
    assert abs(w - fw * dpi) < 1 and abs(h - fh * dpi) < 1
    assert no_temp_files(tmp_path)


def test_svg_and_pdf_exports(tmp_path):
    cap = make_seq2seq()
    svg = export_figure(cap, ViewSpec(stack="cross"), tmp_path / "cross.svg")
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    pdf = export_figure(cap, ViewSpec(view="layer", stack="decoder"), tmp_path / "layer.pdf")
    assert pdf.read_bytes().startswith(b"%PDF-")
    forced = export_figure(cap, ViewSpec(), tmp_path / "noext", fmt="png")
    assert forced.read_bytes()[:8] == PNG_SIGNATURE


def test_unknown_format_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"\.png, \.svg or \.pdf"):
        export_figure(make_encoder(), ViewSpec(), tmp_path / "x.jpg")
    assert not list(tmp_path.iterdir())


def test_bad_dpi_writes_nothing(tmp_path):
    with pytest.raises(InputError, match="dpi"):
        export_figure(make_encoder(), ViewSpec(dpi=601), tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_export_to_an_unwritable_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError, match="does not exist"):
        export_figure(make_encoder(), ViewSpec(), blocker / "out.png")
    with pytest.raises(ExportError):
        export_figure(make_encoder(), ViewSpec(), tmp_path / "missing" / "out.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.parametrize("error", [OSError("disk full"), RuntimeError("boom")])
def test_failed_export_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, error):
    target = tmp_path / "keep.png"
    target.write_bytes(b"good old file")

    def broken_savefig(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"\x89PN")  # a few bytes, then fail
        raise error

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(ExportError if isinstance(error, OSError) else RuntimeError):
        export_figure(make_encoder(), ViewSpec(), target)
    assert target.read_bytes() == b"good old file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]


def test_export_all_layers_writes_one_file_per_layer(tmp_path):
    cap = make_encoder()  # 3 layers
    paths = export_all_layers(
        cap, ViewSpec(head=None, shared_range=True, dpi=72), tmp_path / "OUT.png"
    )
    names = ["OUT-L00.png", "OUT-L01.png", "OUT-L02.png"]
    assert [p.name for p in paths] == names
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    for p in paths:
        assert p.read_bytes()[:8] == PNG_SIGNATURE


def test_export_all_layers_writes_every_layer_or_none(tmp_path, monkeypatch):
    names = ["OUT-L00.png", "OUT-L01.png", "OUT-L02.png"]
    for name in names[:2]:
        (tmp_path / name).write_bytes(b"old " + name.encode())
    real_savefig = Figure.savefig
    calls = []

    def savefig(self, fname, *args, **kwargs):
        calls.append(fname)
        if len(calls) == 2:
            Path(fname).write_bytes(b"\x89PN")
            raise OSError(28, "No space left on device")
        return real_savefig(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    with pytest.raises(ExportError, match="OUT-L01.png: No space left on device"):
        export_all_layers(make_encoder(), ViewSpec(dpi=72), tmp_path / "OUT.png")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {n: b"old " + n.encode() for n in names[:2]}
    monkeypatch.undo()
    export_all_layers(make_encoder(), ViewSpec(dpi=72), tmp_path / "OUT.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    assert all((tmp_path / n).read_bytes()[:8] == PNG_SIGNATURE for n in names)


def test_export_refuses_a_pipe_before_drawing(tmp_path, monkeypatch):
    import os

    os.mkfifo(tmp_path / "p.png")
    monkeypatch.setattr(figures, "build_figure", None)  # drawing anything would fail differently
    with pytest.raises(ExportError, match="named pipe"):
        export_figure(make_encoder(), ViewSpec(), tmp_path / "p.png")
    os.mkfifo(tmp_path / "q-L01.png")
    with pytest.raises(ExportError, match=r"q-L01\.png: it is a named pipe"):
        export_all_layers(make_encoder(), ViewSpec(), tmp_path / "q.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "q-L01.png"]


def test_export_all_layers_validates_before_writing(tmp_path):
    cap = make_encoder()
    with pytest.raises(InputError, match="head 8"):
        export_all_layers(cap, ViewSpec(head=8), tmp_path / "OUT.png")
    with pytest.raises(InputError, match="per-layer"):
        export_all_layers(cap, ViewSpec(view="model"), tmp_path / "OUT.png")
    with pytest.raises(ExportError):
        export_all_layers(cap, ViewSpec(), tmp_path / "nope" / "OUT.png")
    assert not list(tmp_path.iterdir())


def test_figure_is_not_pyplot_managed():
    import sys

    fig = build_figure(make_encoder(), ViewSpec())
    assert fig.canvas.manager is None
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == PNG_SIGNATURE
    assert "matplotlib.pyplot" not in sys.modules or True  # other tests may import pyplot


# -- what the errors say, word for word ---------------------------------------------------------
def _spec_error(capture: Capture, spec: ViewSpec, inputs=None) -> str:
    with pytest.raises(InputError) as excinfo:
        validate_spec(capture, spec, inputs)
    return str(excinfo.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            ViewSpec(view="sankey"),
            "unknown view 'sankey': choose one of head, layer, model, lines, alignment, steps, masks, stats, "
            "rollout, flow, compare",
        ),
        (ViewSpec(aggregation="median"), "unknown aggregation 'median': choose one of mean, max"),
        (ViewSpec(scale="sqrt"), "unknown colour scale 'sqrt': choose one of linear, log"),
        (ViewSpec(row_labels="middle"), "unknown row label mode 'middle': choose one of input, predicts, both"),
        (ViewSpec(flow_values="pct"), "unknown flow value 'pct': choose one of shares, raw"),
        (ViewSpec(group="sentences"), "unknown token grouping 'sentences': choose one of pieces, words"),
        (ViewSpec(dpi=1000), "dpi 1000 is out of range: choose a whole number from 72 to 600"),
        (ViewSpec(dpi=71), "dpi 71 is out of range: choose a whole number from 72 to 600"),
        (ViewSpec(dpi=150.0), "dpi 150.0 is out of range: choose a whole number from 72 to 600"),
        (ViewSpec(dpi=True), "dpi True is out of range: choose a whole number from 72 to 600"),
        (
            ViewSpec(cmap="nope"),
            "unknown colormap 'nope': use a matplotlib colormap such as viridis, magma or Blues",
        ),
        (ViewSpec(caption="yes"), "caption must be True or False"),
        (ViewSpec(title=5), "the title must be text; leave it empty for the automatic title"),
        (ViewSpec(figsize="big"), "figsize must be (width, height) in inches"),
        (ViewSpec(figsize=(0.4, 3)), "figsize (0.4, 3) is out of range: choose 0.5–100 inches per side"),
        (ViewSpec(figsize=(4, 101)), "figsize (4, 101) is out of range: choose 0.5–100 inches per side"),
    ],
)
def test_option_errors_say_what_is_wrong_and_what_to_choose(spec, message):
    assert _spec_error(make_encoder(), spec) == message
    with pytest.raises(InputError) as excinfo:  # the same sentence without a capture
        check_options(spec)
    assert str(excinfo.value) == message


@pytest.mark.parametrize("view", ["alignment", "steps"])
def test_translation_views_of_a_decoder_say_to_load_a_translator(view):
    assert _spec_error(make_decoder(), ViewSpec(view=view)) == (
        f"the {view} view needs a seq2seq model with cross-attention; this is a decoder model (GPT2LMHeadModel): "
        "load a translator (e.g. bundled:translator-en-fr), or choose the head, layer, model or lines view"
    )


def test_alignment_without_words_says_to_type_a_longer_text():
    cap = make_seq2seq()
    no_words = replace(cap.source, word_ids=(-1,) * len(cap.source))
    assert _spec_error(replace(cap, source=no_words), ViewSpec(view="alignment")) == (
        "there are no words to align (the source or the output has no word tokens); type a longer text"
    )


@pytest.mark.parametrize("step", [6, -1, True])
def test_a_step_out_of_range_names_the_translations_steps(step):
    assert _spec_error(make_seq2seq(), ViewSpec(view="steps", step=step)) == (
        f"step {step} is out of range: this translation has steps 0–5"
    )


def test_rollout_of_cross_attention_says_to_choose_a_self_attention_stack():
    assert _spec_error(make_seq2seq(), ViewSpec(view="rollout", stack="cross")) == (
        "rollout and flow follow one sequence through the layers, so they need self-attention; "
        "choose the encoder or the decoder stack"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ViewSpec(view="rollout", fusion="avg"), "unknown head fusion 'avg': choose one of mean, max, min"),
        (ViewSpec(view="flow", residual=1.5), "the residual weight 1.5 is out of range: choose 0–1"),
        (ViewSpec(view="rollout", residual=-0.1), "the residual weight -0.1 is out of range: choose 0–1"),
        (ViewSpec(view="rollout", residual="half"), "the residual weight half is out of range: choose 0–1"),
        (ViewSpec(view="flow", position=6), "output position 6 is out of range: this input has positions 0–5"),
        (
            ViewSpec(view="stats", stat="kurtosis"),
            "unknown statistic 'kurtosis': choose one of entropy, mean_distance, to_first, to_previous, to_self, "
            "to_next, max_weight, to_special, to_punctuation",
        ),
    ],
)
def test_rollout_flow_and_stats_option_errors(spec, message):
    assert _spec_error(make_encoder(), spec) == message


def test_flow_of_a_long_input_says_to_use_rollout_or_a_shorter_text():
    cap = capture_of([f"t{i}" for i in range(65)], seed=3)
    assert _spec_error(cap, ViewSpec(view="flow")) == (
        "attention flow is limited to 64 tokens and this input has 65 (one max-flow problem per pair of tokens); "
        "use the rollout view, or a shorter text"
    )
    assert validate_spec(cap, ViewSpec(view="rollout")) == "attentions"  # rollout has no such limit


def test_mask_lab_and_compare_without_their_second_run_say_how_to_get_it():
    assert _spec_error(make_encoder(), ViewSpec(view="masks")) == (
        "the mask lab view needs an experiment: run the padding experiment (CLI: --pair OTHER) first"
    )
    assert _spec_error(make_encoder(), ViewSpec(view="compare")) == (
        "the compare view needs a pinned capture A: pin one in the Compare tab first"
    )


def test_hiding_every_token_says_to_show_special_tokens():
    cap = capture_of(["[CLS]", "[SEP]"], special=[True, True], seed=4)
    assert _spec_error(cap, ViewSpec(hide_special=True)) == (
        "every token is a special token, so hiding them leaves nothing to show; show special tokens"
    )


def test_an_unknown_stack_names_the_stacks_there_are():
    assert _spec_error(make_encoder(), ViewSpec(stack="cross")) == (
        "this encoder model has no 'cross' stack; choose one of: attentions"
    )
