"""What a view shows: :class:`ViewSpec`, the inputs a few views need, and their validation.

One :class:`ViewSpec` describes the display selection of any view (view, stack, layer, head or
aggregate, token hiding, colours, theme, and the options of the analysis views); the window keeps
one in its viewer state, the CLI builds one from its flags, and every view's data function reads
it. :func:`validate_spec` checks a spec against a capture before anything is drawn or written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..aggregate import AGGREGATIONS, SCALES, Aggregation, Scale, check_layer_head
from ..errors import InputError, a_or_an
from ..result import SELF_STACKS, Capture, TokenSeq
from ..rollout import Fusion
from ..themes import get_theme
from ..words import GROUPS, grouped

#: what each attention stack is called in titles and in the window's stack list
STACK_TITLES = {
    "attentions": "self-attention",
    "encoder_attentions": "encoder self-attention",
    "decoder_attentions": "decoder self-attention",
    "cross_attentions": "cross-attention",
}

#: every view, in the window's tab order
VIEWS = ("head", "layer", "model", "lines", "alignment", "steps", "masks", "stats", "rollout", "flow", "compare")
#: views drawn from one layer's maps (they have a per-layer form: ``--all-layers``)
PER_LAYER_VIEWS = ("head", "layer", "lines")
#: decoder/cross rows: labelled by the decoder input at t, the token predicted at t, or both
ROW_LABEL_MODES = ("input", "predicts", "both")
#: accepted spellings of the row modes (``output`` is the older name of ``predicts``)
ROW_ALIASES = {"output": "predicts"}
FLOW_VALUES = ("shares", "raw")
FORMATS = ("png", "svg", "pdf")
DPI_MIN, DPI_MAX = 72, 600


@dataclass(frozen=True)
class ViewSpec:
    """What one view shows; enough to rebuild it as a figure.

    Attributes
    ----------
    view : one of :data:`VIEWS`
    stack : stack name or alias accepted by :meth:`Capture.resolve_stack` (None = first stack)
    layer : 0-based layer (head, layer, lines and steps views; the layer marked in the overviews)
    head : 0-based head, or None for the aggregate over the layer's heads
    aggregation : ``mean`` | ``max`` over heads when ``head`` is None
    hide_special : drop special-token rows/columns from the display (decoder/cross rows labelled
        by what they predict count as special when the predicted token is; ``both``: when the
        input and the predicted token are)
    renormalize : with ``hide_special``, re-scale rows to sum 1 over the kept columns
    cmap : matplotlib colormap name; None = the theme's
    scale : ``linear`` | ``log`` colour scale
    shared_range : one colour range for the whole stack (comparable across layers/heads)
        instead of the range of what this view shows
    row_labels : decoder/cross rows labelled by ``input`` (the decoder input at t), ``predicts``
        (the output token t they predict) or ``both`` (``input → predicts``, the default: a reader
        cannot take the input for the word being produced)
    show_causal_mask : grey + hatch the cells a causal mask forbids (causal stacks only)
    lines_per_head : lines view: one colour per head of the layer instead of one map
    stretch : the window's Head view: cells fill the view instead of staying square (exported
        figures are sized from their labels)
    theme : ``light`` | ``dark`` | ``presentation``
    dpi : 72–600, pixel density of PNG output (and of images inside SVG/PDF)
    title : None = automatic (model, stack, layer, head/aggregation, notes)
    alignment_layer, alignment_head : cross-attention layer/head of the alignment view
        (layer None = the best documented layer, else the last, and then head None = the best
        documented head; otherwise head None = the mean of heads)
    alignment_method : ``predict`` (row t for output token t) or ``shift`` (Shift-Att: row t + 1);
        None = the documented best method, else ``predict``
    alignment_threshold : also link source words with at least this share of a word row
        (0 < P ≤ 1); None = the documented best threshold, else argmax links only
    step : steps view: the decoder position t shown
    stat : statistics view: the statistic that colours the layers × heads grid
    fusion, residual : rollout/flow: how heads are fused, weight α of the residual (α·I + (1−α)·A)
    through_layer : rollout/flow: combine layers 0…this one (None = all)
    position : rollout/flow: the output position whose contributions the bars show
        (None = the last position of a causal stack, else 0)
    flow_values : flow view: ``shares`` (each output row normalised to sum 1, as the reference
        code does) or ``raw`` (max-flow values)
    figsize : (width, height) in inches; None = sized from the content
    group : ``pieces`` (the tokenizer's tokens) or ``words`` (pieces grouped into words by
        :func:`analysis.words.group_capture`: columns summed, rows averaged); every view reads the
        capture at this grouping (:func:`for_spec`)
    caption : write the view's caption (:func:`analysis.views.captions.view_caption`: what a row,
        a column and a weight are, in plain words) under an exported figure, which grows to hold
        it; the window shows captions itself
    """

    view: str = "head"
    stack: str | None = None
    layer: int = 0
    head: int | None = 0
    aggregation: Aggregation = "mean"
    hide_special: bool = False
    renormalize: bool = False
    cmap: str | None = None
    scale: Scale = "linear"
    shared_range: bool = False
    row_labels: str = "both"
    show_causal_mask: bool = True
    lines_per_head: bool = False
    stretch: bool = False
    theme: str = "light"
    dpi: int = 150
    title: str | None = None
    alignment_layer: int | None = None
    alignment_head: int | None = None
    alignment_method: str | None = None
    alignment_threshold: float | None = None
    step: int = 0
    stat: str = "entropy"
    fusion: Fusion = "mean"
    residual: float = 0.5
    through_layer: int | None = None
    position: int | None = None
    flow_values: str = "shares"
    figsize: tuple[float, float] | None = None
    caption: bool = False
    group: str = "pieces"

    @property
    def rows(self) -> str:
        """The row label mode with aliases resolved (``input`` | ``predicts`` | ``both``)."""
        return ROW_ALIASES.get(self.row_labels, self.row_labels)


@dataclass(frozen=True)
class ViewInputs:
    """What some views need beyond the capture; the window passes what its tabs hold, the CLI
    what it computed. Missing parts that follow from the capture alone (statistics, flow) are
    computed by the view's data function; the mask lab and the Compare view cannot do without
    theirs.

    Attributes
    ----------
    mask_report : masks view: a :class:`analysis.masks.PaddingReport` or ``MaskingReport``
    compare_with : compare view: the pinned capture A (the spec's capture is B)
    stats_rows : statistics view: :func:`analysis.stats.stats_rows` of the capture
    flow : flow view: the raw attention flow ``[S, S]`` for the spec's stack, fusion, residual
        and layers
    gold : alignment view: the gold links ``(sure, possible)`` and the gold file's name
    model_folder : alignment view: the checkpoint folder (its documented best layer)
    """

    mask_report: Any = None
    compare_with: Capture | None = None
    stats_rows: Sequence[dict] | None = None
    flow: np.ndarray | None = None
    gold: tuple[set, set, str] | None = None
    model_folder: str | None = None


def one_of(value: object, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise InputError(f"unknown {what} '{value}': choose one of {', '.join(allowed)}")


def resolve(capture: Capture, stack: str | None) -> str:
    """The stack name, or one sentence when the capture has no such stack."""
    try:
        return capture.resolve_stack(stack)
    except KeyError as exc:  # Capture.resolve_stack's one sentence (str(KeyError) would quote it)
        raise InputError(str(exc.args[0])) from None


def _known_colormap(name: str) -> bool:
    # matplotlib only when a colormap is named: the window's first frame checks a spec without one
    import matplotlib as mpl

    return name in mpl.colormaps


def check_options(spec: ViewSpec) -> None:
    """Check the display options of ``spec`` alone (no capture needed): view, theme, aggregation,
    scale, row labels, flow values, dpi, colormap, title, figsize. Raises :class:`InputError`."""
    _check_common(spec)


def _check_common(spec: ViewSpec) -> None:
    one_of(spec.view, VIEWS, "view")
    get_theme(spec.theme)
    one_of(spec.aggregation, AGGREGATIONS, "aggregation")
    one_of(spec.scale, SCALES, "colour scale")
    one_of(spec.rows, ROW_LABEL_MODES, "row label mode")
    one_of(spec.flow_values, FLOW_VALUES, "flow value")
    one_of(spec.group, GROUPS, "token grouping")
    if isinstance(spec.dpi, bool) or not isinstance(spec.dpi, int | np.integer) or not DPI_MIN <= spec.dpi <= DPI_MAX:
        raise InputError(f"dpi {spec.dpi} is out of range: choose a whole number from {DPI_MIN} to {DPI_MAX}")
    if spec.cmap is not None and not _known_colormap(spec.cmap):
        raise InputError(f"unknown colormap '{spec.cmap}': use a matplotlib colormap such as viridis, magma or Blues")
    if not isinstance(spec.caption, bool | np.bool_):
        raise InputError("caption must be True or False")
    if spec.title is not None and not isinstance(spec.title, str):
        raise InputError("the title must be text; leave it empty for the automatic title")
    if spec.figsize is not None:
        try:
            w, h = (float(v) for v in spec.figsize)
        except (TypeError, ValueError):
            raise InputError("figsize must be (width, height) in inches") from None
        if not (0.5 <= w <= 100 and 0.5 <= h <= 100):
            raise InputError(f"figsize {spec.figsize} is out of range: choose 0.5–100 inches per side")


def is_seq2seq(capture: Capture | None) -> bool:
    """True when ``capture`` has what the translation views need (cross-attention, decoder
    inputs and outputs)."""
    return (
        capture is not None
        and capture.kind == "seq2seq"
        and "cross_attentions" in capture.stacks
        and "decoder_attentions" in capture.stacks
        and capture.outputs is not None
        and capture.decoder_inputs is not None
    )


def _needs_seq2seq(capture: Capture, what: str) -> tuple[TokenSeq, TokenSeq]:
    """The capture's decoder inputs and outputs; InputError unless it is a seq2seq capture."""
    if not is_seq2seq(capture) or capture.decoder_inputs is None or capture.outputs is None:
        raise InputError(
            f"{what} needs a seq2seq model with cross-attention; this is {a_or_an(capture.kind)} model "
            f"({capture.architecture}): load a translator (e.g. bundled:translator-en-fr), or choose the head, "
            "layer, model or lines view"
        )
    return capture.decoder_inputs, capture.outputs


def _check_alignment(capture: Capture, spec: ViewSpec) -> str:
    check_words_to_align(capture)  # a seq2seq capture with words on both sides
    name = "cross_attentions"
    n_layers, n_heads = capture.stacks[name].shape[:2]
    check_layer_head(n_layers, n_heads, 0 if spec.alignment_layer is None else spec.alignment_layer, spec.alignment_head)
    from ..alignment import check_method

    check_method(spec.alignment_method or "predict", spec.alignment_threshold)
    return name


def check_words_to_align(capture: Capture) -> None:
    """InputError unless the source and the output of a seq2seq capture each have a word (a text
    of special tokens only, such as ``</s>``, has none): what the Alignment tab says in words."""
    _, outputs = _needs_seq2seq(capture, "the alignment view")
    if not (np.asarray(capture.source.word_ids) >= 0).any() or not (np.asarray(outputs.word_ids) >= 0).any():
        raise InputError("there are no words to align (the source or the output has no word tokens); type a longer text")


def _check_steps(capture: Capture, spec: ViewSpec) -> str:
    decoder_inputs, _ = _needs_seq2seq(capture, "the steps view")
    n_layers, n_heads = capture.stacks["cross_attentions"].shape[:2]
    check_layer_head(n_layers, n_heads, spec.layer, spec.head)
    n = len(decoder_inputs)
    if isinstance(spec.step, bool) or not isinstance(spec.step, int | np.integer) or not 0 <= spec.step < n:
        raise InputError(f"step {spec.step} is out of range: this translation has steps 0–{n - 1}")
    return "cross_attentions"


def _check_rollout(capture: Capture, spec: ViewSpec, name: str) -> None:
    from ..rollout import FLOW_MAX_TOKENS, FUSIONS

    if name not in SELF_STACKS:
        raise InputError(
            "rollout and flow follow one sequence through the layers, so they need self-attention; "
            "choose the encoder or the decoder stack"
        )
    one_of(spec.fusion, FUSIONS, "head fusion")
    if not isinstance(spec.residual, int | float) or not 0.0 <= float(spec.residual) <= 1.0:
        raise InputError(f"the residual weight {spec.residual} is out of range: choose 0–1")
    n_layers, _, n, _ = capture.stacks[name].shape
    if spec.through_layer is not None:
        check_layer_head(n_layers, 1, spec.through_layer, None)
    if spec.position is not None and not 0 <= spec.position < n:
        raise InputError(f"output position {spec.position} is out of range: this input has positions 0–{n - 1}")
    if spec.view == "flow" and n > FLOW_MAX_TOKENS:
        raise InputError(
            f"attention flow is limited to {FLOW_MAX_TOKENS} tokens and this input has {n} (one max-flow problem "
            "per pair of tokens); use the rollout view, or a shorter text"
        )


def _check_hidden(capture: Capture, spec: ViewSpec, name: str) -> None:
    if spec.hide_special and (capture.query_tokens(name).special.all() or capture.key_tokens(name).special.all()):
        raise InputError("every token is a special token, so hiding them leaves nothing to show; show special tokens")


def for_spec(capture: Capture, spec: ViewSpec, inputs: ViewInputs | None = None) -> tuple[Capture, ViewInputs]:
    """The capture (and the Compare view's capture A) at the spec's grouping: the one place where
    ``spec.group`` applies, for the window, the exports and the CLI alike (grouping a word-level
    capture again changes nothing)."""
    inputs = inputs or ViewInputs()
    if spec.group not in GROUPS:
        return capture, inputs
    other = getattr(inputs, "compare_with", None)  # duck-typed inputs (tests, scripts) may lack it
    if other is not None:
        inputs = replace(inputs, compare_with=grouped(other, spec.group))
    return grouped(capture, spec.group), inputs


def validate_spec(capture: Capture, spec: ViewSpec, inputs: ViewInputs | None = None) -> str:
    """Check ``spec`` (and the inputs its view needs) against ``capture`` before anything is
    drawn or written.

    Returns
    -------
    The resolved stack name (``cross_attentions`` for the alignment and steps views).

    Raises
    ------
    InputError : one sentence saying what is wrong and what to choose instead (unknown view,
        stack, theme, colormap; layer/head/step out of range; a translation view without
        cross-attention; dpi outside 72–600; nothing left after hiding special tokens; a mask
        lab or comparison without its second run).
    """
    _check_common(spec)
    capture, inputs = for_spec(capture, spec, inputs)
    if spec.view == "alignment":
        return _check_alignment(capture, spec)
    if spec.view == "steps":
        return _check_steps(capture, spec)
    name = resolve(capture, spec.stack)
    n_layers, n_heads = capture.stacks[name].shape[:2]
    if spec.view in ("head", "layer", "lines", "compare"):
        check_layer_head(n_layers, n_heads, spec.layer, spec.head if spec.view != "layer" else None)
    if spec.view == "stats":
        from ..stats import STAT_NAMES

        one_of(spec.stat, STAT_NAMES, "statistic")
    if spec.view in ("rollout", "flow"):
        _check_rollout(capture, spec, name)
    if spec.view == "masks" and inputs.mask_report is None:
        raise InputError("the mask lab view needs an experiment: run the padding experiment (CLI: --pair OTHER) first")
    if spec.view == "compare" and inputs.compare_with is None:
        raise InputError("the compare view needs a pinned capture A: pin one in the Compare tab first")
    _check_hidden(capture, spec, name)
    return name
