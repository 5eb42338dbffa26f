"""Behaviours pinned down by mutation testing (group K, the sixth session's drawing survivors that
no figure golden met): the Model view's labels centred on their tiles and as dense as fit, Compare's
note inside the empty difference panel, the Steps view's shortened tokens and its tick-label colour."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.result import Capture
from analysis.themes import get_theme
from analysis.views import DRAWERS, view_data
from analysis.views.compare import CompareDrawer, compare_data
from analysis.views.overview import MosaicDrawer
from analysis.views.spec import ViewInputs, ViewSpec
from tests.test_aggregate import random_stack, token_seq


def _deep(n_layers: int, n_heads: int = 4, n: int = 6) -> Capture:
    a = random_stack(np.random.default_rng(n_layers), n_layers, n_heads, n, n)
    return Capture(model="deep", kind="encoder", architecture="BertModel", text="x",
                   source=token_seq([f"t{i}" for i in range(n)]), stacks={"attentions": a})


# --------------------------------------------------------------------------------------------
# Model view
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("live", [False, True])
def test_model_view_labels_sit_on_the_centres_of_their_tiles(live):
    """Each layer name is level with the middle of its row of tiles, each head name above the
    middle of its column (in the export's ticks and in what the window paints)."""
    cap = _deep(6, n_heads=5)
    d = view_data(cap, ViewSpec(view="model"))
    drawer = MosaicDrawer(Figure(figsize=(10, 8)), get_theme("light"), live=live)
    drawer.draw(d)
    m = d.mosaic
    h, w = m.cell
    assert [s for _, s in drawer.col_items] == [f"H{c}" for c in range(5)]
    assert [s for _, s in drawer.row_items] == [f"L{r}" for r in range(6)]
    for c, (x, _) in enumerate(drawer.col_items):
        left, right = c * (w + m.gap) - 0.5, c * (w + m.gap) + w - 0.5  # the tile's pixel edges
        assert x == pytest.approx((left + right) / 2)
        assert m.tile_at(0, x) == (0, c)
    for r, (y, _) in enumerate(drawer.row_items):
        top, bottom = r * (h + m.gap) - 0.5, r * (h + m.gap) + h - 0.5
        assert y == pytest.approx((top + bottom) / 2)
        assert m.tile_at(y, 0) == (r, 0)
    if not live:
        assert list(drawer.ax.get_xticks()) == pytest.approx([x for x, _ in drawer.col_items])
        assert list(drawer.ax.get_yticks()) == pytest.approx([y for y, _ in drawer.row_items])


def test_the_window_names_every_layer_of_a_40_layer_model():
    """Llama-2-13B's 40 layers still fit one name each at 8 pt (1.3 lines apart) in the window's
    six inches; 48 layers get every other name."""
    theme = get_theme("light")
    assert theme.tick_size == 8.0
    for n_layers, step in ((40, 1), (41, 1), (48, 2)):
        d = view_data(_deep(n_layers, n_heads=2, n=3), ViewSpec(view="model"))
        drawer = MosaicDrawer(Figure(figsize=(10, 8)), theme, live=True)
        drawer.draw(d)
        assert [s for _, s in drawer.row_items] == [f"L{r}" for r in range(0, n_layers, step)], n_layers


# --------------------------------------------------------------------------------------------
# Compare
# --------------------------------------------------------------------------------------------
def test_compare_note_is_written_inside_the_empty_difference_panel():
    """When there is no difference map (A and B have different numbers of tokens), the note saying why stands in the
    middle of that panel, wholly inside it."""
    a = Capture(model="a", kind="encoder", architecture="BertModel", text="a b",
                source=token_seq(["a", "b", "c"]), stacks={"attentions": random_stack(np.random.default_rng(0), 2, 2, 3, 3)})
    b = Capture(model="b", kind="encoder", architecture="BertModel", text="a b c",
                source=token_seq(["a", "b", "c", "d"]), stacks={"attentions": random_stack(np.random.default_rng(1), 2, 2, 4, 4)})
    d = compare_data(b, ViewSpec(view="compare", layer=0, head=0), ViewInputs(compare_with=a))
    assert d.diff is None and d.note
    fig = Figure(figsize=(12, 5))
    canvas = FigureCanvasAgg(fig)
    drawer = CompareDrawer(fig, get_theme("light"))
    drawer.draw(d)
    canvas.draw()
    renderer = canvas.get_renderer()
    note, panel = drawer.note.get_window_extent(renderer), drawer.ax_d.get_window_extent(renderer)
    assert drawer.note.get_text()
    assert panel.x0 <= note.x0 and note.x1 <= panel.x1 and panel.y0 <= note.y0 and note.y1 <= panel.y1
    assert (note.x0 + note.x1) / 2 == pytest.approx((panel.x0 + panel.x1) / 2, abs=1.0)
    assert (note.y0 + note.y1) / 2 == pytest.approx((panel.y0 + panel.y1) / 2, abs=1.0)


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------
def _steps_capture(candidates):
    from dataclasses import replace

    from tests.test_figure_geometry_golden import short_seq2seq

    cap = short_seq2seq()
    return replace(cap, prediction=replace(cap.prediction, per_position=((0, candidates),)))


def test_steps_candidates_longer_than_16_characters_are_cut_to_16_with_an_ellipsis():
    """A long candidate keeps its first 15 characters and an ellipsis: 16 in all; 16 stay whole."""
    from analysis.fonts import ensure_cjk_font

    ensure_cjk_font()  # the Korean decoder tokens
    long, exact = "abcdefghijklmnopqrstu", "ABCDEFGHIJKLMNOP"
    cap = _steps_capture(((long, 0.6), (exact, 0.3)))
    drawer = DRAWERS["steps"](Figure(figsize=(9, 7.5)), get_theme("light"))
    drawer.draw(view_data(cap, ViewSpec(view="steps", step=0)))
    assert drawer.top_labels() == ["abcdefghijklmno…", exact]


def test_steps_tick_labels_are_written_in_the_themes_text_colour():
    """On the dark theme the source tokens under the cross-attention bars and every axis's values
    are light (the text colour), not the dim grid colour of the ticks themselves; on the decoder
    chart only the tokens not yet seen (the future, masked) are dim."""
    from analysis.fonts import ensure_cjk_font

    ensure_cjk_font()  # the Korean decoder tokens
    theme = get_theme("dark")
    assert theme.text_color != theme.grid_color
    cap = _steps_capture((("a", 0.6),))
    drawer = DRAWERS["steps"](Figure(figsize=(9, 7.5)), theme)
    drawer.draw(view_data(cap, ViewSpec(view="steps", step=0)))
    cross = [(t.get_text(), t.get_color()) for t in drawer.ax_cross.get_xticklabels()]
    assert cross and all(c == theme.text_color for _, c in cross), cross
    for ax in (drawer.ax_cross, drawer.ax_self):
        values = [(t.get_text(), t.get_color()) for t in ax.get_yticklabels()]
        assert values and all(c == theme.text_color for _, c in values), values
        for line in ax.yaxis.get_ticklines():
            assert line.get_color() == theme.grid_color
    dec = [t.get_color() for t in drawer.ax_self.get_xticklabels()]
    assert dec == [theme.text_color] + [theme.grid_color] * (len(dec) - 1)


# --------------------------------------------------------------------------------------------
# mask lab and Compare (the seed-29 sample's survivors)
# --------------------------------------------------------------------------------------------
def test_mask_lab_maps_of_a_translator_are_labelled_by_decoder_and_source_tokens(loaded):
    """Token masking of a translator: cross-attention rows are the decoder's tokens and its columns
    the source's; decoder self-attention is decoder tokens both ways; the encoder's, source both ways."""
    from analysis.masks import token_masking
    from analysis.views.common import clean_label
    from analysis.views.masks import masks_data
    from tests.test_masks import TARGET
    from tests.test_masks import TEXT as SENTENCE

    r = token_masking(loaded("marian"), SENTENCE, [1], target=TARGET)
    dec = tuple(clean_label(t) for t in r.decoder_tokens)
    src = tuple(clean_label(t) for t in r.tokens)
    assert dec and src and dec != src[: len(dec)]
    for stack, rows, cols in (("cross_attentions", dec, src), ("decoder_attentions", dec, dec),
                              ("encoder_attentions", src, src)):
        d = masks_data(r, ViewSpec(view="masks", stack=stack))
        assert d.stack == stack
        for panel in d.panels[:2]:
            assert (panel.rows, panel.cols) == (rows, cols), stack


def test_mask_lab_maps_use_the_themes_colour_map():
    """The before/after maps take the theme's colours (magma on the dark theme), the Δ map its own."""
    from analysis.views.masks import MasksDrawer
    from tests.test_mutation_found_d import _masks

    theme = get_theme("dark")
    assert theme.cmap == "magma"
    drawer = MasksDrawer(Figure(figsize=(12, 6)), theme)
    drawer.draw(_masks(np.array([[-0.1, 0.5], [0.2, 0.0]], np.float32)))
    assert [ax.images[0].get_cmap().name for ax in drawer.ax_panels] == ["magma", "magma", "RdBu_r"]


def test_compare_maps_show_every_row_first_token_on_top():
    a = Capture(model="a", kind="encoder", architecture="BertModel", text="a b",
                source=token_seq(["a", "b", "c"]), stacks={"attentions": random_stack(np.random.default_rng(0), 2, 2, 3, 3)})
    b = Capture(model="b", kind="encoder", architecture="BertModel", text="a b",
                source=token_seq(["a", "b", "c"]), stacks={"attentions": random_stack(np.random.default_rng(1), 2, 2, 3, 3)})
    drawer = CompareDrawer(Figure(figsize=(12, 5)), get_theme("light"))
    drawer.draw(compare_data(b, ViewSpec(view="compare", layer=0, head=0), ViewInputs(compare_with=a)))
    for ax in (drawer.ax_a, drawer.ax_b, drawer.ax_d):
        assert ax.get_ylim() == pytest.approx((2.5, -0.5))
        assert ax.get_xlim() == pytest.approx((-0.5, 2.5))


def test_layer_view_head_names_sit_on_a_borderless_translucent_dark_box():
    """The exported Layer view names each tile (H0, H1, …) in white on a half-transparent black box
    without an outline, at the tile's top left corner."""
    cap = _deep(2, n_heads=3)
    d = view_data(cap, ViewSpec(view="layer", layer=1))
    drawer = MosaicDrawer(Figure(figsize=(8, 6)), get_theme("light"))
    drawer.draw(d)
    assert [t.get_text() for t in drawer.labels] == ["H0", "H1", "H2"]
    for t, (x, y, _) in zip(drawer.labels, drawer.tile_items, strict=True):
        box = t.get_bbox_patch()
        assert box.get_linewidth() == 0
        assert box.get_facecolor() == pytest.approx((0.0, 0.0, 0.0, 0.55))
        assert t.get_color() == "white" and t.get_position() == (x, y)
        assert (t.get_ha(), t.get_va()) == ("left", "top")


def test_an_export_to_an_unknown_format_names_the_extension_it_was_given(tmp_path):
    from analysis.errors import InputError
    from analysis.figures import export_figure

    cap, spec = _deep(1, n_heads=1, n=3), ViewSpec(view="head")
    for name, fmt, shown in (("fig.jpg", None, ".jpg"), ("fig.tiff", None, ".tiff"), ("fig", None, "no extension"),
                             ("fig.png", "bmp", "bmp"), ("fig.png", "jpg", "jpg")):
        with pytest.raises(InputError) as err:
            export_figure(cap, spec, tmp_path / name, fmt=fmt)
        assert str(err.value) == f"cannot export {name} as '{shown}': use a .png, .svg or .pdf file name (or fmt=)"
    assert list(tmp_path.iterdir()) == []


def test_special_tokens_are_read_from_the_tokenizers_special_ids_and_its_added_tokens():
    """A tokenizer's special ids mark tokens special even when they are not among its added
    tokens (and added tokens marked special count too)."""
    from types import SimpleNamespace

    from analysis.tokens import special_flags

    plain = SimpleNamespace(all_special_ids=[0, 2])
    assert special_flags(plain, [0, 1, 2, 3]).tolist() == [True, False, True, False]
    added = SimpleNamespace(all_special_ids=[0], added_tokens_decoder={5: SimpleNamespace(special=True),
                                                                       6: SimpleNamespace(special=False)})
    assert special_flags(added, [0, 5, 6, 1]).tolist() == [True, True, False, False]
    assert special_flags(SimpleNamespace(), [0, 1]).tolist() == [False, False]


def test_the_rollout_figures_map_is_taller_than_its_bars():
    """The exported Rollout figure gives the map about twice the height of the bar chart below
    it (3 : 1.4)."""
    from analysis.views.rollout import RolloutDrawer

    cap = _deep(2, n_heads=2, n=8)
    d = view_data(cap, ViewSpec(view="rollout"))
    theme = get_theme("light")
    fig = Figure(figsize=RolloutDrawer.size(d, theme))
    canvas = FigureCanvasAgg(fig)
    drawer = RolloutDrawer(fig, theme)
    drawer.draw(d)
    canvas.draw()
    renderer = canvas.get_renderer()
    top, bars = drawer.ax.get_window_extent(renderer), drawer.bar_ax.get_window_extent(renderer)
    assert top.y0 > bars.y1  # the map above the bars
    assert 1.6 < top.height / bars.height < 2.8, top.height / bars.height
