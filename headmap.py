"""Headmap from Python: capture attention in a script or a notebook, draw it, open the window.

A façade over ``analysis/`` (and, for :func:`show`, the window started in another process)::

    import headmap

    cap = headmap.capture("bundled:translator-en-fr", "I like this course")
    cap                                   # Capture(model=..., kind='seq2seq', ... cross_attentions=[2, 4, 7, 5] ...)
    cap.stacks["cross_attentions"]        # read-only float32 [layer, head, query, key]
    fig = headmap.figure(cap, "head", stack="cross", layer=1, head=None)   # matplotlib Figure
    rows = headmap.head_stats(cap)        # one dict per stack, layer and head
    headmap.save_session(cap, "lesson.headmap")
    headmap.show(cap)                     # the Headmap window on this capture (separate process)

A model you already hold works the same way: ``headmap.capture(model, text, tokenizer=tok)``.

Shapes: every attention stack is ``[layer, head, query, key]`` (``[L, H, Q, K]``); query rows
sum to 1. Stacks are ``attentions`` (encoder-only and decoder-only models, ``[L, H, S, S]``) or
``encoder_attentions`` ``[L, H, S, S]``, ``decoder_attentions`` ``[L, H, T, T]`` and
``cross_attentions`` ``[L, H, T, S]`` (seq2seq), with S input tokens (``cap.source``) and T
decoder positions (``cap.decoder_inputs``; row t predicts ``cap.outputs[t]``).

This module imports neither torch nor Qt when it is imported; ``capture`` imports torch and
transformers, and :func:`show` never imports Qt into the calling process.

The same file is the ``headmap`` command (:func:`main`): ``headmap --help``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.result import Capture, Prediction, TokenSeq

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from analysis.loader import LoadedModel

__all__ = [
    "Capture", "Prediction", "TokenSeq", "capture", "figure", "head_stats", "load", "load_session", "main",
    "save_session", "show",
]

#: ``progress(stage, fraction or None, message)``: stages ``resolve``, ``download``,
#: ``dequantize``, ``load``, ``ready``, ``generate``, ``run``
Progress = Callable[[str, float | None, str], None]

#: how tokens are grouped on the map axes: ``pieces`` (the tokenizer's own pieces)
GROUPS = ("pieces", "words")

#: the window's tab that shows each view (for :func:`show`)
_TABS = {"head": "Head", "layer": "Layer", "model": "Model", "lines": "Lines", "alignment": "Alignment",
         "steps": "Steps", "masks": "Mask lab", "stats": "Statistics", "rollout": "Rollout", "flow": "Rollout"}
#: figure() options that are not ViewSpec fields but inputs of a view (ViewInputs)
_INPUTS = ("mask_report", "compare_with", "stats_rows", "flow", "gold", "model_folder")
#: the CLI's names of ViewSpec fields
_ALIASES = {"aggregate": "aggregation", "rows": "row_labels"}


# -- capture -------------------------------------------------------------------------------------
def _check_group(group: str) -> None:
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; choose 'pieces' (the tokenizer's pieces) or 'words'")


def _grouped(cap: Capture, group: str) -> Capture:
    """The capture with its tokens grouped as asked: the one place where ``group`` is applied."""
    _check_group(group)
    from analysis.words import group_capture

    return group_capture(cap, group)


def load(model: str, *, dtype: str = "auto", device: str = "auto", trust_remote_code: bool = False,
         allow_pickle: bool = False, progress: Progress | None = None) -> LoadedModel:
    """Load a model once to capture many sentences with it (``capture(loaded, text)``).

    Parameters
    ----------
    model : a hub id, a ``save_pretrained`` folder, a ``.gguf`` file or ``bundled:NAME``
        (``minilm``, ``smollm2``, ``translator-en-fr``, ``translator-en-ko``)
    dtype : ``auto`` (float32 on the CPU) | ``float32`` | ``float16`` | ``bfloat16``
    device : ``auto`` | ``cpu`` | ``cuda`` | ``mps``
    trust_remote_code : run the checkpoint's own Python code (only for repositories you trust)
    allow_pickle : allow ``pytorch_model.bin`` weights
    progress : ``progress(stage, fraction, message)``, called between the stages

    Raises
    ------
    analysis.errors.HeadmapError : one sentence saying what is wrong and what to do
    """
    from analysis.loader import load_model
    from analysis.tasks import TaskState

    return load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                      allow_pickle=allow_pickle, task=TaskState(progress))


def capture(
    model: Any,
    text: str,
    *,
    tokenizer: Any = None,
    target: str | None = None,
    generate: bool = False,
    max_new_tokens: int | None = None,
    group: str = "pieces",
    num_beams: int = 1,
    target_lang: str | None = None,
    max_tokens: int | None = 1024,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    progress: Progress | None = None,
) -> Capture:
    """Run ``text`` through a model and capture every attention map.

    Parameters
    ----------
    model : a reference string (hub id, folder, ``.gguf`` file, ``bundled:NAME``), a model
        returned by :func:`load`, or a transformers model object you already hold (pass its
        ``tokenizer``). A model object is used as it is, on its device; if it runs with SDPA (or
        another implementation that returns no maps) it is switched to eager attention and to
        evaluation mode for the capture and put back afterwards.
    text : the input sentence (encoder input, decoder prompt, seq2seq source)
    tokenizer : the tokenizer of a model object (references load their own)
    target : seq2seq: a target sentence to teacher-force; without it the target is generated
    generate : decoder: continue the text ``max_new_tokens`` tokens (default 20) before the capture
    max_new_tokens : decoder continuation length / seq2seq generation cap (None: automatic)
    group : ``pieces`` – one row and column per token piece of the tokenizer; (``words`` –
        pieces merged into words – is not available yet and raises ValueError)
    num_beams, target_lang, max_tokens : as the CLI's ``--num-beams``, ``--target-lang``,
        ``--max-tokens``
    dtype, device, trust_remote_code, allow_pickle : how a reference string is loaded (see :func:`load`)
    progress : ``progress(stage, fraction, message)`` called between the stages of loading and
        running (``fraction`` in [0, 1] over the whole call, or None when unknown)

    Returns
    -------
    Capture : immutable; ``stacks`` maps each stack name to a read-only float32 array
    ``[layer, head, query, key]``; ``source`` (and for seq2seq ``decoder_inputs`` / ``outputs``)
    hold the tokens; ``prediction`` the model's output; ``notes`` remarks such as a truncation.

    Raises
    ------
    analysis.errors.HeadmapError : the model cannot be loaded or run (one sentence saying what to do)
    ValueError : an unknown ``group`` (or ``words``, not available yet)
    """
    _check_group(group)
    from analysis.capture import capture as run_capture
    from analysis.errors import InputError
    from analysis.loader import LoadedModel
    from analysis.tasks import TaskState

    task = TaskState(progress)
    by_reference = isinstance(model, str | os.PathLike)
    if by_reference:
        if tokenizer is not None:
            raise InputError("tokenizer= is only for model objects; a reference string loads its own tokenizer — drop tokenizer=")
        lm = load(str(model), dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                  allow_pickle=allow_pickle, progress=task.sub(0.0, 0.6).report)
    elif isinstance(model, LoadedModel):
        lm = model
    else:
        lm = None
    run_task = task.sub(0.6 if by_reference else 0.0, 1.0)

    def run(loaded: LoadedModel) -> Capture:
        new = max_new_tokens if max_new_tokens is not None else (20 if loaded.kind == "decoder" and generate else 0)
        gen = generate or (loaded.kind == "seq2seq" and target is None)
        return run_capture(loaded, text, target=target, generate=gen, max_new_tokens=new, num_beams=num_beams,
                           target_lang=target_lang, max_tokens=max_tokens, task=run_task)

    if lm is not None:
        cap = run(lm)
    else:
        from analysis.inmemory import eager_attention, wrap_model

        wrapped = wrap_model(model, tokenizer)
        with eager_attention(model):
            cap = run(wrapped)
    return _grouped(cap, group)


# -- figures and statistics ---------------------------------------------------------------------
def _model_folder(reference: str) -> str | None:
    """The checkpoint folder of a capture's model when it is on disk (a bundled translator's
    documented alignment layer lives there), else None. Never downloads anything."""
    if reference.startswith("bundled:"):
        try:
            from analysis.bundled import bundled_path

            path = bundled_path(reference.split(":", 1)[1], verify=False)
        except Exception:
            return None
        return str(path) if path.is_dir() else None
    return reference if Path(reference).is_dir() else None


def _split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    from analysis.views.spec import ViewSpec

    spec_fields = {f.name for f in fields(ViewSpec)}
    spec: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    for key, value in options.items():
        name = _ALIASES.get(key, key)
        if name in _INPUTS:
            inputs[name] = value
        elif name in spec_fields:
            spec[name] = value
        else:
            raise TypeError(f"figure() has no option {key!r}; use a ViewSpec field ({', '.join(sorted(spec_fields))}) "
                            f"or a view input ({', '.join(_INPUTS)})")
    return spec, inputs


def figure(capture: Capture, view: str = "head", *, stack: str | None = None, layer: int = 0, head: int | None = 0,
           rows: str | None = None, theme: str = "light", **options: Any) -> Figure:
    """The figure the CLI writes for ``--view VIEW`` (and the window's tab of that name shows).

    Parameters
    ----------
    capture : from :func:`capture` or :func:`load_session`
    view : ``head`` | ``layer`` | ``model`` | ``lines`` | ``alignment`` | ``steps`` | ``stats`` |
        ``rollout`` | ``flow`` | ``masks`` | ``compare``
    stack : seq2seq: ``encoder`` | ``decoder`` | ``cross`` (default encoder)
    layer, head : 0-based; ``head=None`` aggregates the heads (``aggregation="mean"`` or ``"max"``)
    rows : seq2seq decoder/cross row labels: ``both`` (default, ``input → predicted``), ``input``,
        ``predicts``
    theme : ``light`` | ``dark`` | ``presentation``
    options : any other field of :class:`analysis.views.spec.ViewSpec` with the CLI's meaning —
        ``hide_special`` (rows renormalized unless ``renormalize=False``), ``aggregation``
        (or ``aggregate``), ``dpi`` (default 150), ``caption``, ``step``, ``stat``, ``fusion``,
        ``residual``, ``through_layer`` (rollout/flow: layers 0…L, default all), ``position``,
        ``flow_values``, ``alignment_layer``, ``alignment_head``, ``cmap``, ``scale``,
        ``figsize`` … — and what some views need: ``mask_report``
        (:func:`analysis.masks.padding_experiment`, for ``masks``), ``compare_with`` (capture A, for
        ``compare``), ``model_folder``

    Returns
    -------
    matplotlib.figure.Figure : not attached to pyplot; a notebook shows it inline (it has
    ``_repr_png_``); ``fig.savefig("h.png")`` writes it (``dpi`` is the figure's)

    Raises
    ------
    analysis.errors.InputError : a layer, head, step or stack the capture does not have (what to choose)
    TypeError : an unknown option
    """
    from analysis.figures import build_figure
    from analysis.views.spec import ViewInputs, ViewSpec

    spec_opts, input_opts = _split_options(options)
    if spec_opts.get("hide_special") and "renormalize" not in spec_opts:
        spec_opts["renormalize"] = True  # as the CLI's --hide-special
    if rows is not None:
        spec_opts["row_labels"] = rows
    spec = ViewSpec(view=view, stack=stack, layer=layer, head=head, theme=theme, **spec_opts)
    input_opts.setdefault("model_folder", _model_folder(capture.model))
    fig = build_figure(capture, spec, ViewInputs(**input_opts))
    fig._repr_png_ = lambda: _png_bytes(fig)  # type: ignore[attr-defined]  # inline in Jupyter without pyplot
    return fig


def _png_bytes(fig: Figure) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, facecolor=fig.get_facecolor(), edgecolor=fig.get_edgecolor())
    return buf.getvalue()


def head_stats(capture: Capture) -> list[dict[str, Any]]:
    """Per-head statistics: the rows of the CLI's ``--export-stats`` CSV.

    Returns
    -------
    One dict per stack, layer and head (in that order) with ``stack`` (``attentions``,
    ``encoder_attentions``, …), ``layer`` and ``head`` (0-based), one float per statistic
    (``entropy``, ``mean_distance``, ``to_first``, ``to_previous``, ``to_self``, ``to_next``,
    ``max_weight``, ``to_special``, ``to_punctuation``; None where undefined, e.g. positional
    statistics of cross-attention) and ``tags`` (the head's pattern tags joined with ``;``).
    """
    from analysis.stats import stats_rows

    return stats_rows(capture)


# -- sessions and the window --------------------------------------------------------------------
def save_session(capture: Capture, path: str | os.PathLike, *, options: dict[str, Any] | None = None) -> Path:
    """Write ``capture`` to a ``.headmap`` session file (the window's File ▸ Open session, or
    :func:`load_session`, reopens it without the model). ``options``: the window's selection to
    restore (``{"spec": {"layer": 1, "head": 2}, "tab": "Head"}``). Returns the path written."""
    from analysis.session import save_session as write

    inputs = {"text": capture.text, "target": capture.target, "generate": capture.generated}
    return write(path, capture, model_ref=capture.model, inputs=inputs, options=options or {})


def load_session(path: str | os.PathLike) -> Capture:
    """The capture saved in a ``.headmap`` session (by the window, the CLI's ``--save-session``
    or :func:`save_session`), equal to the one saved, arrays bit for bit."""
    from analysis.session import load_session as read

    return read(path).capture


#: starts the window's process (tests replace it)
_popen = subprocess.Popen
#: "not given" for show()'s selection (``head=None`` is a choice: the mean over heads)
_UNSET: Any = object()


def show(capture_or_model: Any, text: str | None = None, *, view: str | None = None, stack: str | None = _UNSET,
         layer: int = _UNSET, head: int | None = _UNSET, session: str | os.PathLike | None = None,
         **kwargs: Any) -> subprocess.Popen:
    """Open the Headmap window on a capture (or capture ``text`` with a model first).

    The window runs in a separate Python process, handed the capture as a session file, so a
    notebook's kernel is never blocked and Qt is never imported into it; this returns at once.

    Parameters
    ----------
    capture_or_model : a :class:`Capture`, or anything :func:`capture` takes as ``model``
    text : the sentence, when a model is given
    view, stack, layer, head : what the window shows first (its tab and selection; ``head=None``:
        the mean over heads); not given: the window's own choice
    session : where to write the session file (default: a new temporary folder; the file stays
        so that the window can be reopened from File ▸ Open recent). The window's own output
        goes to a ``.log`` file beside it, never to the caller's stdout and stderr.
    kwargs : passed to :func:`capture` with a model (``tokenizer=``, ``target=``, …)

    Returns
    -------
    subprocess.Popen : the window's process (``.wait()`` blocks until it is closed;
    ``.terminate()`` closes it)
    """
    from analysis.errors import InputError

    if isinstance(capture_or_model, Capture):
        if text is not None or kwargs:
            raise InputError("show(capture) takes no text or capture options; pass a model to capture a new text")
        cap = capture_or_model
    else:
        if text is None:
            raise InputError("show(model, text) needs the text to run; or pass a Capture")
        cap = capture(capture_or_model, text, **kwargs)
    spec = {k: v for k, v in (("stack", stack), ("layer", layer), ("head", head)) if v is not _UNSET}
    options: dict[str, Any] = {"spec": spec}
    if view is not None:
        if view not in _TABS:
            raise InputError(f"unknown view {view!r}; choose one of: {', '.join(_TABS)}")
        options["tab"] = _TABS[view]
    path = Path(session) if session is not None else Path(tempfile.mkdtemp(prefix="headmap-show-")) / "capture.headmap"
    save_session(cap, path, options=options)
    # the window's output goes to a log: a caller reading this process's pipes is not kept
    # waiting by the window, and a notebook's cells do not fill with Qt's messages
    with open(path.with_suffix(".log"), "ab") as log:
        return _popen(window_command(path), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                      start_new_session=True)


def window_command(session: str | os.PathLike) -> list[str]:
    """The command that opens the window on a session file: this interpreter running this file
    (its folder holds ``analysis`` and ``gui``, in a checkout and in an installed wheel alike)."""
    return [sys.executable, str(Path(__file__).resolve()), "--open-session", str(session)]


# -- the command ------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None, prog: str = "headmap") -> int:
    """The ``headmap`` command (and ``python main.py``): without export flags it opens the window;
    with any ``--export-*`` / ``--mask-report`` / ``--save-session`` flag it runs headless.
    Returns the exit code."""
    from analysis.cli import build_parser, headless_main, is_headless

    args = build_parser(prog).parse_args(argv)
    if is_headless(args):
        return headless_main(args)
    from gui.app import run_window

    return run_window(args)


if __name__ == "__main__":
    sys.exit(main())
