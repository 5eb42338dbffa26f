"""One short caption per view, in plain words, for teaching.

:func:`view_caption` says in two or three sentences what a view shows, in the terms of the
Hugging Face course's first chapter (attention, the encoder's self-attention, the decoder's
masked self-attention, cross-attention, the attention mask of a padded batch): what a row and a
column are, what a weight means (a row's weights are the shares of that token's attention and sum
to 1), what the causal mask hides, what cross-attention row t reads and predicts, what rollout and
flow estimate, what the mask lab compares. The words follow the capture (encoder, decoder or
translator; which stack), the hidden special tokens (rows renormalised or not), the row labels of
decoder and cross maps (``spec.rows``) and, for flow, ``spec.flow_values``.

The window shows a view's caption under it; an exported figure gets it with
``ViewSpec(caption=True)`` (CLI ``--caption``).
"""

from __future__ import annotations

from ..result import SELF_STACKS, Capture
from .common import DECODER_ROW_STACKS
from .spec import ViewInputs, ViewSpec, for_spec


def _stack(capture: Capture, spec: ViewSpec) -> str:
    try:
        return capture.resolve_stack(spec.stack)
    except KeyError:  # an unchecked spec: describe the first stack
        return capture.resolve_stack(None)


def _decoder_rows(capture: Capture, name: str) -> bool:
    return name in DECODER_ROW_STACKS and capture.outputs is not None


def stack_words(capture: Capture, name: str) -> str:
    """The stack in the course's words (``the encoder's self-attention``, …)."""
    if name == "cross_attentions":
        return "cross-attention (the decoder looking at the source sentence)"
    # a seq2seq model's decoder stack is causal, its encoder stack is not
    return "the decoder's masked self-attention" if capture.is_causal(name) else "the encoder's self-attention"


def row_label_words(spec: ViewSpec) -> str:
    """How decoder and cross rows are labelled in the spec's row mode."""
    return {"input": "labelled by the decoder input they read",
            "predicts": "labelled by the token they predict"}.get(spec.rows, "labelled 'input → predicted'")


def rows_words(capture: Capture, name: str, spec: ViewSpec) -> str:
    """What a row of a map of stack ``name`` is (a noun phrase)."""
    if _decoder_rows(capture, name):
        return (f"decoder positions, {row_label_words(spec)}: row t reads decoder input t and predicts "
                "output token t")
    return "the tokens of the sentence, each asking where to look (the query)"


def columns_words(name: str) -> str:
    """What a column of a map of stack ``name`` is (a noun phrase)."""
    if name == "cross_attentions":
        return "the tokens of the source sentence, as the encoder passed them on"
    if name == "decoder_attentions":
        return "the decoder inputs it can look at"
    return "the tokens it can look at (the key)"


def weights_sentence(spec: ViewSpec) -> str:
    """What a weight is and what a row sums to, with hidden special tokens or not."""
    what = "A weight is the share of the row token's attention that goes to the column token"
    if spec.hide_special and spec.renormalize:
        return what + "; special tokens are hidden and each row is renormalised so it still sums to 1."
    if spec.hide_special:
        return (what + "; special tokens are hidden without renormalising, so a row sums to less than 1 "
                "(the rest went to the hidden tokens).")
    return what + ", and each row's weights sum to 1."


def mask_sentence(capture: Capture, name: str, spec: ViewSpec) -> str:
    """What the stack lets a row see: the whole sentence, or what the causal mask leaves."""
    if name == "cross_attentions":
        return "Nothing is masked: at every step the decoder may look at the whole source sentence."
    if capture.is_causal(name):
        grey = " (the grey cells)" if spec.show_causal_mask else ""
        if _decoder_rows(capture, name):
            return (f"The causal mask hides every later position{grey}, so row t sees only decoder inputs 0…t: "
                    "the translation so far.")
        return f"The causal mask hides every later position{grey}, so a token sees only itself and the tokens before it."
    return "The encoder sees the whole sentence: every token may attend to tokens on both sides of it."


def _sums_to(spec: ViewSpec) -> str:
    """What a displayed row sums to: hidden special tokens without renormalising take their share
    with them."""
    if not spec.hide_special:
        return "1"
    if spec.renormalize:
        return "1 (special tokens hidden, rows renormalised)"
    return "at most 1 (special tokens hidden, rows not renormalised)"


def _head(capture: Capture, spec: ViewSpec, name: str) -> str:
    return (f"This map is {stack_words(capture, name)}: its rows are {rows_words(capture, name, spec)}, and its "
            f"columns are {columns_words(name)}. {weights_sentence(spec)} {mask_sentence(capture, name, spec)}")


def _rows_short(capture: Capture, name: str) -> str:
    if _decoder_rows(capture, name):
        return "rows are decoder positions (row t predicts output token t)"
    return "rows are the tokens whose attention it is"


def _cols_short(name: str) -> str:
    if name == "cross_attentions":
        return "columns are source tokens"
    if name == "decoder_attentions":
        return "columns are decoder inputs"
    return "columns are the tokens they look at"


def _layer(capture: Capture, spec: ViewSpec, name: str) -> str:
    causal = " Later positions are hidden by the causal mask." if capture.is_causal(name) else ""
    return (f"Every head of layer {spec.layer} of {stack_words(capture, name)}, side by side: each tile is a map like "
            f"the Head view's, whose {_rows_short(capture, name)} and {_cols_short(name)}; each row sums to "
            f"{_sums_to(spec)}. The heads of a layer read the same tokens in parallel, and each learns its own "
            f"pattern.{causal}")


def _model(capture: Capture, spec: ViewSpec, name: str) -> str:
    return (f"Every layer (a row of tiles) and every head (a column of tiles) of {stack_words(capture, name)}: each "
            f"tile is a small map whose {_rows_short(capture, name)} and {_cols_short(name)}, and each of its "
            f"rows sums to {_sums_to(spec)}. Compare patterns across the model: a diagonal looks at the token itself or "
            "its neighbour, a vertical stripe at one token from every row.")


def _lines(capture: Capture, spec: ViewSpec, name: str) -> str:
    left = ("decoder positions, row t predicting output token t" if _decoder_rows(capture, name)
            else "the tokens whose attention it is")
    right = {"cross_attentions": "the source tokens", "decoder_attentions": "the decoder inputs"}.get(name, "the tokens they look at")
    return (f"Layer {spec.layer} of {stack_words(capture, name)} as lines: on the left the rows of the map, {left}; "
            f"on the right its columns, {right}. A line is darker and thicker for a larger weight, and the lines of a "
            f"left token are the shares of its attention, summing to {_sums_to(spec)}.")


def _alignment() -> str:
    return ("A word alignment read off cross-attention: cross-attention row t reads decoder input t and predicts "
            "output token t, so a translation word's lines show where in the source the model looked while "
            "producing it. In the matrix each row is a translation word and each column a source word (their "
            "pieces' weights added up on the source side and averaged on the translation side); the thick lines "
            "and boxes mark each translation word's strongest source word.")


def _steps(capture: Capture, spec: ViewSpec) -> str:
    t = int(spec.step)
    read = predicted = ""
    if capture.decoder_inputs is not None and capture.outputs is not None and 0 <= t < len(capture.outputs):
        read, predicted = f" ('{capture.decoder_inputs.display[t]}')", f" ('{capture.outputs.display[t]}')"
    return (f"Step {t} of the translation: decoder position {t} reads decoder input {t}{read} and predicts output "
            f"token {t}{predicted}. Top: its cross-attention row, the shares of its attention on each source token "
            "(they sum to 1); bottom left: its masked self-attention row over the decoder inputs, where the causal "
            f"mask hides the later positions; bottom right: the model's top-5 candidates for token {t}.")


def _masks(inputs: ViewInputs) -> str:
    report = inputs.mask_report
    if report is not None and not hasattr(report, "pad_positions"):
        return ("Here the attention mask hides the ticked tokens (0 in the mask): every row gives them exactly 0 "
                "and shares its attention among the tokens left, so each row still sums to 1. Rows are the tokens "
                "whose attention it is and columns the tokens they look at; before, after and Δ = after − before "
                "show what hiding them changes.")
    return ("Sentences of different lengths are padded to one length when they are batched, and the attention "
            "mask (top: 1 = a real token, 0 = padding) tells attention to ignore the pad tokens. Rows are the tokens "
            "whose attention it is and columns the tokens they look at, each row summing to 1: with the mask the pad "
            "columns get exactly 0 and the sentence attends as it does alone; without it the pads take a share of "
            "every row, and Δ shows what changes.")


def _stats(capture: Capture, spec: ViewSpec, name: str) -> str:
    from ..stats import POSITIONAL_STATS
    from .stats import STAT_HELP

    help_ = STAT_HELP.get(spec.stat, spec.stat.replace("_", " "))
    cross = (" Cross-attention's rows and columns are different sentences, so statistics about positions are "
             "left empty." if name not in SELF_STACKS and spec.stat in POSITIONAL_STATS else "")
    return (f"One number per head of {stack_words(capture, name)}: each row of the grid is a layer and each column "
            f"a head. The number is the {help_}, computed from that head's map, whose rows each sum to 1.{cross}")


def _through(capture: Capture, spec: ViewSpec, name: str) -> int:
    last = capture.stacks[name].shape[0] - 1
    return last if spec.through_layer is None else int(spec.through_layer)


def _rollout(capture: Capture, spec: ViewSpec, name: str) -> str:
    causal = (" The causal mask carries through: no position receives anything from a later token (grey)."
              if capture.is_causal(name) else "")
    return (f"Attention rollout estimates how much each input token (a column) contributes to each position after "
            f"layer {_through(capture, spec, name)} (a row): the heads of each layer are fused, the residual "
            f"connection is added as α·I + (1 − α)·A with α = {spec.residual:g}, and the layers' maps are multiplied. "
            f"Each row sums to 1, and the bars show the row of one output position.{causal}")


def _flow(capture: Capture, spec: ViewSpec, name: str) -> str:
    values = ("Each row is shown as shares of the input: normalised to sum to 1." if spec.flow_values == "shares"
              else "These are the raw maximum flows: a row is not normalised and sums to more than 1.")
    return (f"Attention flow treats the layers' attention maps as pipes between tokens and estimates how much each "
            f"input token (a column) contributes to each position after layer {_through(capture, spec, name)} (a row) "
            f"as the most attention that can flow from the one to the other. {values} The bars show the row of one "
            "output position.")


def _compare(capture: Capture, spec: ViewSpec, name: str) -> str:
    return (f"A (the pinned capture) and B (this one) show the same map of {stack_words(capture, name)}, layer "
            f"{spec.layer}, on one colour scale: {_rows_short(capture, name)} and {_cols_short(name)}, each "
            "row summing to 1. B − A is red where B gives a cell more attention and blue where A does.")


def view_caption(capture: Capture, spec: ViewSpec, inputs: ViewInputs | None = None) -> str:
    """Two or three plain sentences saying what ``spec.view`` shows for ``capture``.

    Parameters
    ----------
    capture : the capture the view shows (B for the compare view)
    spec : the view and its options (stack, layer, hidden tokens, ``rows``, ``flow_values``, …);
        best checked with :func:`~analysis.views.spec.validate_spec` first
    inputs : the mask lab's report decides between the padding and the token-masking caption
        (default: padding)

    Returns
    -------
    One paragraph, without line breaks.
    """
    capture, inputs = for_spec(capture, spec, inputs)
    text = _caption(capture, spec, inputs)
    if capture.group == "words" and spec.view != "masks":
        text += (" Tokens are grouped into words: attention to a word is the sum over its pieces, attention from a "
                 "word the mean over its pieces, so a row still sums to 1.")
    return text


def _caption(capture: Capture, spec: ViewSpec, inputs: ViewInputs) -> str:
    name = _stack(capture, spec)
    view = spec.view
    if view == "head":
        return _head(capture, spec, name)
    if view == "layer":
        return _layer(capture, spec, name)
    if view == "model":
        return _model(capture, spec, name)
    if view == "lines":
        return _lines(capture, spec, name)
    if view == "alignment":
        return _alignment()
    if view == "steps":
        return _steps(capture, spec)
    if view == "masks":
        return _masks(inputs)
    if view == "stats":
        return _stats(capture, spec, name)
    if view == "rollout":
        return _rollout(capture, spec, name)
    if view == "flow":
        return _flow(capture, spec, name)
    if view == "compare":
        return _compare(capture, spec, name)
    raise KeyError(view)


__all__ = ["view_caption"]
