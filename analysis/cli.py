"""Headmap's command line: the headless exports (a public contract) and the window launcher.

``python main.py`` opens the window (main.py hands over to ``gui``; this module never imports
it). Any ``--export-*`` / ``--mask-report`` / ``--save-session``
flag runs headless: load, capture, write the files, exit 0. Any failure exits non-zero with one line
on stderr (no traceback unless ``--debug``) and leaves no output file: one invocation's outputs
appear together or not at all (:func:`analysis.fileio.staged_writes`). Every output is first
written completely to a temp file next to it; only when all of them succeeded are they moved into
place, one ``os.replace`` after the other in a fixed order (npz, alignment, statistics, figure or
its layer files, mask report, session). If anything fails, every temp file is removed and the
files already at those paths keep their content. The renames are not one atomic operation across
files: a crash between two of them leaves the outputs moved so far (each complete).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from .stats import STAT_NAMES as _STATS
from .tasks import ProgressFn, TaskState

if TYPE_CHECKING:
    from .loader import LoadedModel
    from .result import Capture

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INTERNAL = 1

#: the views the CLI exports (every view of the window but Compare, which needs a pinned capture)
_VIEWS = ("head", "layer", "model", "lines", "alignment", "steps", "stats", "rollout", "flow", "masks")
#: what the CLI suggests after an unexpected error
_DEBUG_HINT = "rerun with --debug for details"


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's promise: a bad flag is one line on stderr (not the usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {message}; see {self.prog} --help\n")


def build_parser(prog: str = "python main.py") -> argparse.ArgumentParser:
    """The argument parser of ``python main.py`` and of the installed ``headmap`` command
    (``prog``: how the help and the examples name the command)."""
    p = _Parser(
        prog=prog,
        description=(
            "Headmap – an attention microscope for transformers. Without export flags it opens the "
            "window; with any --export-* / --mask-report / --save-session flag it runs headless."
        ),
        epilog=(
            "examples:\n"
            f"  {prog} --model bundled:minilm --text 'I like this course' --export-npz x.npz\n"
            f"  {prog} --model bundled:translator-en-fr --text 'I like this course' --generate \\\n"
            "         --export-npz x.npz --export-alignment x.txt\n"
            f"  {prog} --model bundled:smollm2 --text '나는 이 강의를 좋아한다' --export-png h.png --view head --layer 3 --head 0\n"
            f"  {prog} --session lesson.headmap --export-png h.png --view layer --theme presentation --dpi 300\n"
            f"  {prog} --open-session lesson.headmap      # the window, on a saved capture\n"
            "Layers and heads are 0-based, as in transformers."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", metavar="SRC", help="hub id, checkpoint folder, .gguf file or bundled:NAME "
                   "(bundled:minilm, bundled:smollm2, bundled:translator-en-fr, bundled:translator-en-ko)")
    g.add_argument("--session", metavar="FILE.headmap", help="instead of --model and --text: export from a saved "
                   "session, with no model loaded (flags that need the model are refused)")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"], help="weights dtype (default auto: float32 on CPU)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="where to run (default auto)")
    g.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code to run (off by default; only for repos you trust)")
    g.add_argument("--allow-pickle", action="store_true", help="allow pickle weights (pytorch_model.bin), loaded with weights_only")
    g.add_argument("--allow-missing-weights", action="store_true",
                   help="load a checkpoint whose weights lack tensors its config describes (they start random: "
                        "the maps change from run to run; a warning says so)")
    g.add_argument("--no-memory-check", action="store_true", help="load even when the estimated memory exceeds the free RAM")

    g = p.add_argument_group("input")
    g.add_argument("--text", metavar="TEXT", help="the input sentence")
    tg = g.add_mutually_exclusive_group()
    tg.add_argument("--target", metavar="TEXT", help="seq2seq: the target sentence (teacher forcing)")
    tg.add_argument("--generate", action="store_true", help="seq2seq: translate/generate the target; decoder: continue the text")
    g.add_argument("--max-new-tokens", type=int, default=0, metavar="N", help="tokens to generate (decoder continuation; default 20 with --generate; seq2seq: automatic)")
    g.add_argument("--num-beams", type=int, default=1, metavar="N", help="beam search width for seq2seq generation (default 1 = greedy)")
    g.add_argument("--target-lang", metavar="LANG", help="seq2seq generation on multilingual models: force the target language "
                   "(NLLB: fra_Latn, M2M100: fr)")
    g.add_argument("--max-tokens", type=int, default=None, metavar="N",
                   help="truncate the input to N tokens (default: the model's maximum, at most 16384, where the disk "
                        "has room for the maps; captures over 256 MiB are kept on disk under the cache folder, not "
                        "in memory; the Python API holds its captures in memory and stops at 1024)")

    g.add_argument("--group", choices=["pieces", "words"], default="pieces",
                   help="pieces: the tokenizer's tokens (default); words: pieces grouped into words in every view and "
                        "export (attention to a word: the sum over its pieces; from a word: the mean)")

    g = p.add_argument_group("exports (headless)")
    g.add_argument("--export-npz", metavar="OUT.npz", help="write every attention stack and the tokens to a .npz")
    g.add_argument("--force", action="store_true", help="write an --export-npz whose float32 maps take over 1 GB "
                   "(refused without it)")
    g.add_argument("--export-alignment", metavar="OUT.txt", help="seq2seq: write the word alignment as one Pharaoh line of i-j pairs")
    g.add_argument("--alignment-layer", type=int, metavar="L", help="cross-attention layer for the alignment (default: the best documented layer, else the last)")
    g.add_argument("--alignment-head", type=int, metavar="H", help="cross-attention head for the alignment (default: the best "
                   "documented head with the default layer, else the head average)")
    g.add_argument("--alignment-method", choices=["predict", "shift"], help="which cross-attention row aligns output word t: "
                   "predict = row t, computed while predicting it; shift = row t+1, where t is the decoder input "
                   "(Shift-Att, Chen et al. 2020); default: the best documented method, else predict")
    g.add_argument("--alignment-threshold", type=float, metavar="P", help="besides the argmax link, link every source word "
                   "with at least this share of the row (0 < P <= 1; default: the best documented threshold, else none)")
    g.add_argument("--export-stats", metavar="OUT.csv", help="write per-head statistics, one row per stack, layer and head")
    g.add_argument("--save-session", metavar="OUT.headmap", help="save a session file (model reference, inputs, options and captured arrays)")
    fig = g.add_mutually_exclusive_group()
    fig.add_argument("--export-png", metavar="OUT.png", help="write a figure of --view as PNG")
    fig.add_argument("--export-svg", metavar="OUT.svg", help="write a figure of --view as SVG")
    fig.add_argument("--export-pdf", metavar="OUT.pdf", help="write a figure of --view as PDF")

    g = p.add_argument_group("figure options")
    g.add_argument("--view", choices=_VIEWS, default="head",
                   help="which view to export (default head); the window's tab of the same name draws the same figure")
    g.add_argument("--stack", choices=["encoder", "decoder", "cross"], help="seq2seq: which stack (default encoder)")
    g.add_argument("--layer", type=int, metavar="L",
                   help="layer, 0-based (default 0; rollout/flow: combine layers 0…L, default all)")
    g.add_argument("--head", type=int, metavar="H", help="head, 0-based (default: aggregate over heads)")
    g.add_argument("--aggregate", choices=["mean", "max"], default="mean", help="aggregation over heads when --head is not given")
    g.add_argument("--hide-special", action="store_true", help="hide special tokens (rows renormalised)")
    g.add_argument("--rows", choices=["input", "predicts", "both"], default="both",
                   help="seq2seq decoder and cross-attention rows: labelled by the decoder input at t, the token "
                        "predicted at t, or both (default both: 'input → predicted')")
    g.add_argument("--step", type=int, default=0, metavar="T", help="--view steps: the decoder position t (default 0)")
    g.add_argument("--stat", choices=list(_STATS), default="entropy", metavar="NAME",
                   help=f"--view stats: the statistic of the grid ({', '.join(_STATS)}; default entropy)")
    g.add_argument("--fusion", choices=["mean", "max", "min"], default="mean", help="--view rollout/flow: how heads are fused")
    g.add_argument("--residual", type=float, default=0.5, metavar="A", help="--view rollout/flow: residual weight α in α·I + (1−α)·A (default 0.5)")
    g.add_argument("--position", type=int, metavar="P",
                   help="--view rollout/flow: the output position of the bars (default: the last of a decoder, else 0)")
    g.add_argument("--flow-values", choices=["shares", "raw"], default="shares",
                   help="--view flow: each output row as shares of the input (default, as the paper's code) or raw max-flow values")
    g.add_argument("--dpi", type=int, default=150, metavar="N", help="PNG resolution, 72–600 (default 150)")
    g.add_argument("--theme", choices=["light", "dark", "presentation"], default="light", help="figure theme")
    g.add_argument("--caption", action="store_true", help="write the view's caption under the exported figure")
    g.add_argument("--all-layers", action="store_true", help="one file per layer: OUT-L00.png, OUT-L01.png, …")

    g = p.add_argument_group("mask lab (headless)")
    g.add_argument("--pair", metavar="OTHER", help="a second, longer sentence to batch with --text (padding experiment; "
                   "--mask-report and --view masks)")
    g.add_argument("--mask-report", metavar="OUT.json", help="write the padding experiment's numbers as JSON (needs --pair)")
    g.add_argument("--padding-side", choices=["left", "right"], help="default: right for encoders and seq2seq, left for decoders")

    g = p.add_argument_group("window")
    g.add_argument("--open-session", metavar="FILE.headmap", help="open the window on a saved session (no model is loaded)")

    g = p.add_argument_group("other")
    g.add_argument("--quiet", action="store_true", help="no progress bar on stderr (it is shown only on a terminal anyway); "
                   "warnings and errors still print")
    g.add_argument("--debug", action="store_true", help="show tracebacks and library warnings")
    return p


def is_headless(args: argparse.Namespace) -> bool:
    return any(
        getattr(args, k)
        for k in ("export_npz", "export_alignment", "export_stats", "export_png", "export_svg", "export_pdf",
                  "mask_report", "save_session")
    )


def _quiet_libraries(debug: bool) -> None:
    if debug:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # libraries' own tqdm bars (transformers' GGUF dequantizing uses tqdm directly) stay silent,
    # also off a terminal; read when tqdm is first imported, which is after this. Our one bar
    # (analysis.progress) asks for disable=False itself.
    os.environ.setdefault("TQDM_DISABLE", "1")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass


def check_args(args: argparse.Namespace) -> None:
    """Refuse contradictory or out-of-range flags before anything is loaded (one sentence)."""
    from .errors import InputError

    if args.session:
        check_session_args(args)
    elif not args.model:
        raise InputError("--model is required for exports (or --session FILE.headmap); e.g. --model bundled:minilm")
    elif args.text is None or not args.text.strip():
        raise InputError("--text is empty; give the sentence to run, e.g. --text 'I like this course'")
    if args.mask_report and not args.pair:
        raise InputError("--mask-report needs --pair OTHER: a second, longer sentence to batch with --text")
    fig_path = args.export_png or args.export_svg or args.export_pdf
    if fig_path and args.view == "masks" and not args.pair:
        raise InputError("--view masks needs --pair OTHER: a second, longer sentence to batch with --text")
    if args.alignment_threshold is not None and not 0 < args.alignment_threshold <= 1:
        raise InputError(f"--alignment-threshold {args.alignment_threshold} is out of range; choose a share P with 0 < P <= 1")
    if fig_path and not 72 <= args.dpi <= 600:
        raise InputError(f"--dpi {args.dpi} is out of range; choose 72–600")
    for flag, what in (("layer", "layers"), ("alignment_layer", "layers"), ("head", "heads"),
                       ("alignment_head", "heads"), ("step", "steps"), ("position", "positions")):
        v = getattr(args, flag)
        if v is not None and v < 0:
            raise InputError(f"--{flag.replace('_', '-')} {v} is negative; {what} are 0-based")


def _note_lines(notes: Sequence[str], warnings: bool = True) -> list[str]:
    """``note: …`` lines of ``notes``; a warning keeps its own ``warning: `` prefix (or is left
    out: a model's warnings come again with every capture's notes)."""
    from .readable import WARNING

    return [n if n.startswith(WARNING) else f"note: {n}" for n in notes if warnings or not n.startswith(WARNING)]


@dataclass(frozen=True)
class Source:
    """What the exports are made from: a capture, and the model that made it when one is loaded.

    ``name`` names it in messages (``--model``'s reference, or the session file);
    ``model_folder`` is where a bundled translator documents its best alignment layer;
    ``model_ref``, ``inputs`` and ``options`` are what ``--save-session`` writes; ``notes`` are
    the ``note:`` / ``warning:`` lines said once every output is written.
    """

    capture: Capture
    lm: LoadedModel | None
    name: str
    model_folder: str | None
    model_ref: str
    inputs: Mapping[str, Any]
    options: Mapping[str, Any]
    notes: tuple[str, ...] = ()


def _model_source(args: argparse.Namespace, task: TaskState) -> Source:
    """Load ``--model`` and capture ``--text``."""
    from dataclasses import replace

    from .capture import capture, default_max_tokens
    from .errors import InputError, a_or_an
    from .loader import load_model

    lm = load_model(args.model, dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code,
                    allow_pickle=args.allow_pickle, memory_check=not args.no_memory_check,
                    allow_missing_weights=args.allow_missing_weights, task=task.sub(0.0, 0.6))
    if args.target is not None and lm.kind != "seq2seq":
        raise InputError(f"--target only applies to seq2seq models; {args.model} is {a_or_an(lm.kind)} model")
    if args.target_lang and lm.kind != "seq2seq":
        raise InputError(f"--target-lang only applies to seq2seq models; {args.model} is {a_or_an(lm.kind)} model")
    if args.export_alignment and lm.kind != "seq2seq":
        raise InputError(f"--export-alignment needs a seq2seq model with cross-attention; {args.model} is {a_or_an(lm.kind)} model")
    max_new = args.max_new_tokens
    if lm.kind == "decoder" and args.generate and max_new <= 0:
        max_new = 20
    generate = args.generate or (lm.kind == "seq2seq" and args.target is None)
    limit, capped = (args.max_tokens, "") if args.max_tokens is not None else default_max_tokens(lm.summary)
    # long captures are kept on disk (analysis.store) and removed when this process drops them
    cap = capture(lm, args.text, target=args.target, generate=generate, max_new_tokens=max_new,
                  num_beams=args.num_beams, max_tokens=limit, target_lang=args.target_lang,
                  task=task.sub(0.6, 0.85), store=None)
    if capped and cap.truncated:
        cap = replace(cap, notes=(*cap.notes, capped))
    inputs = {"text": args.text, "target": args.target, "generate": args.generate,
              "max_new_tokens": max_new, "num_beams": args.num_beams}
    options = {"dtype": args.dtype, "device": args.device, "view": args.view, "stack": args.stack,
               "layer": args.layer, "head": args.head, "aggregate": args.aggregate, "theme": args.theme,
               "group": args.group}
    notes = _note_lines(lm.notes, warnings=False) + _note_lines(cap.notes)
    return Source(cap, lm, args.model, lm.summary.source_path, args.model, inputs, options, tuple(notes))


#: flags that need the model, refused with --session (what each would make the model do)
_MODEL_FLAGS = {
    "target": "run on a target", "generate": "generate", "max_new_tokens": "generate",
    "num_beams": "generate", "target_lang": "generate", "max_tokens": "tokenize a text",
    "dtype": "be loaded", "device": "be loaded", "trust_remote_code": "be loaded",
    "allow_pickle": "be loaded", "allow_missing_weights": "be loaded",
    "no_memory_check": "be loaded", "pair": "run the padding experiment", "mask_report": "run the padding experiment",
    "padding_side": "run the padding experiment",
}


def check_session_args(args: argparse.Namespace) -> None:
    """With ``--session``: refuse ``--model``, ``--text`` and every flag that needs the model."""
    from .errors import InputError

    for flag in ("model", "text"):
        if getattr(args, flag) is not None:
            raise InputError(f"--session and --{flag} do not go together: the session holds the capture of its "
                             f"model and text; drop --{flag}")
    defaults = build_parser().parse_args([])
    for flag, what in _MODEL_FLAGS.items():
        if getattr(args, flag) != getattr(defaults, flag):
            option = "--" + flag.replace("_", "-")
            raise InputError(f"{option} needs the model to {what}, and --session exports a saved capture without "
                             f"it; drop {option}, or use --model and --text instead of --session")
    if (args.export_png or args.export_svg or args.export_pdf) and args.view == "masks":
        raise InputError("--view masks needs the model to run the padding experiment, which a session does not "
                         "hold; export it with --model, --text and --pair instead of --session")


def session_source(args: argparse.Namespace) -> Source:
    """The capture of ``--session`` (every check of :func:`analysis.session.load_session`), with no
    model; ``--save-session`` writes its model reference, inputs and options again."""
    from .errors import InputError, a_or_an
    from .session import load_session
    from .views.alignment import model_folder_of

    sess = load_session(args.session)
    cap = sess.capture
    name = f"the session {args.session}"
    if args.export_alignment and cap.kind != "seq2seq":
        raise InputError(f"--export-alignment needs a seq2seq model with cross-attention; {name} holds "
                         f"{a_or_an(cap.kind)} model's capture")
    # a bundled translator's folder documents its best alignment layer; no other path named by the
    # file is followed
    return Source(cap, None, name, model_folder_of(cap), sess.model_ref, sess.inputs, sess.options,
                  tuple(_note_lines(cap.notes)))


def run_headless(args: argparse.Namespace, progress: ProgressFn | None = None,
                 say: Callable[[str], None] | None = None) -> int:
    """Load and capture (or reopen ``--session``), then write every requested file. Raises
    HeadmapError on user errors.

    ``progress(stage, fraction, message)`` hears every stage (loading, dequantizing, generating,
    running, the mask experiment, writing). ``say(line)`` (default: print on stderr) gets the
    ``note:`` / ``warning:`` lines once every output is written: a failing run says none of them.
    """
    check_args(args)
    fig_path = args.export_png or args.export_svg or args.export_pdf
    task = TaskState(progress)

    src = session_source(args) if args.session else _model_source(args, task)
    try:
        return _write_outputs(args, src, task, fig_path, say)
    finally:
        from .store import stores_of

        for store in stores_of(src.capture):  # a long capture's maps leave the disk with the run
            store.close()


def _write_outputs(args: argparse.Namespace, src: Source, task: TaskState, fig_path: str | None,
                   say: Callable[[str], None] | None) -> int:
    """Every requested file of :func:`run_headless`, from ``src``; all of them or none."""
    cap, lm = src.capture, src.lm

    from .errors import InputError
    from .words import group_capture

    shown = group_capture(cap, args.group)  # what every export reads (figures group through their spec)
    # Prepare (and validate) every output before writing the first one.
    writers: list[Callable[[], object]] = []
    if args.export_npz:
        from .npz import FORCE_BYTES, npz_bytes, write_npz

        size = npz_bytes(shown)
        if size > FORCE_BYTES and not args.force:
            raise InputError(f"--export-npz would write {size / 1e9:.1f} GB of float32 attention maps (over "
                             f"{FORCE_BYTES / 1e9:.0f} GB); add --force to write it anyway, or lower --max-tokens")
        writers.append(lambda: write_npz(shown, args.export_npz, task))
    if args.export_alignment:
        from .alignment_export import alignment_for_capture, write_alignment

        res = alignment_for_capture(shown, src.model_folder, args.alignment_layer, args.alignment_head,
                                    args.alignment_method, args.alignment_threshold)
        writers.append(lambda: write_alignment(res, args.export_alignment))
    if args.export_stats:
        from .stats import write_stats_csv

        writers.append(lambda: write_stats_csv(shown, args.export_stats))
    report = None
    if args.mask_report or (fig_path and args.view == "masks"):
        from .masks import padding_experiment

        assert lm is not None  # --session refuses --mask-report and --view masks
        report = padding_experiment(lm, args.text, args.pair, padding_side=args.padding_side, task=task.sub(0.85, 0.9))
    if fig_path:
        writers.append(_figure_writer(args, src, report, fig_path))
    if args.mask_report:
        from .masks import write_mask_report

        assert report is not None  # run above for --mask-report
        writers.append(lambda: write_mask_report(report, args.mask_report))
    if args.save_session:
        from .session import save_session

        writers.append(lambda: save_session(args.save_session, cap, model_ref=src.model_ref, inputs=src.inputs,
                                            options=src.options))
    from .fileio import staged_writes

    with staged_writes():  # all the outputs, or none: moved into place only once every one is written
        for i, w in enumerate(writers):
            task.report("write", 0.9 + 0.1 * i / len(writers), "writing the files…")
            w()
    task.report("write", 1.0, "done")
    say = say or (lambda text: print(text, file=sys.stderr))
    for line in src.notes:
        say(line)
    return EXIT_OK


def figure_spec(args: argparse.Namespace):
    """The :class:`~analysis.figures.ViewSpec` the figure flags describe (what the window's tab of
    that view would show with the same choices)."""
    from .figures import ViewSpec

    rollout = args.view in ("rollout", "flow")
    return ViewSpec(
        view=args.view, stack=args.stack, layer=0 if args.layer is None or rollout else args.layer, head=args.head,
        aggregation=args.aggregate, hide_special=args.hide_special, renormalize=args.hide_special,
        row_labels=args.rows, theme=args.theme, dpi=args.dpi, alignment_layer=args.alignment_layer,
        alignment_head=args.alignment_head, alignment_method=args.alignment_method,
        alignment_threshold=args.alignment_threshold, step=args.step, stat=args.stat, fusion=args.fusion,
        residual=args.residual, through_layer=args.layer if rollout else None, position=args.position,
        flow_values=args.flow_values, caption=args.caption, group=args.group,
    )


def _figure_writer(args: argparse.Namespace, src: Source, report, fig_path: str):
    """Validate the figure request now; return the function that writes it."""
    from .errors import InputError, a_or_an
    from .figures import ViewInputs, export_all_layers, export_figure, validate_spec

    cap = src.capture
    if args.stack and cap.kind != "seq2seq" and args.stack == "cross":
        raise InputError(f"--stack cross needs a seq2seq model; {src.name} is {a_or_an(cap.kind)} model with one stack")
    spec = figure_spec(args)
    inputs = ViewInputs(mask_report=report, model_folder=src.model_folder)
    validate_spec(cap, spec, inputs)
    if args.all_layers:
        return lambda: export_all_layers(cap, spec, fig_path)
    return lambda: export_figure(cap, spec, fig_path, inputs=inputs)


def headless_main(args: argparse.Namespace) -> int:
    """Run the headless exports; returns the exit code (one line on stderr on failure).

    Progress goes to stderr as one bar while it is a terminal and ``--quiet`` is not given
    (:class:`analysis.progress.TerminalProgress`); the bar is gone before any note or error line.
    Notes and warnings are printed once the run succeeded: a failing run prints its error only.
    """
    _quiet_libraries(args.debug)
    from .errors import HeadmapError, user_message
    from .progress import TerminalProgress, is_terminal

    bar = TerminalProgress(sys.stderr, enabled=not getattr(args, "quiet", False) and is_terminal(sys.stderr))
    try:
        with bar:
            return run_headless(args, bar if bar.enabled else None, bar.say)
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:  # the CLI's promise: one line, no traceback
        if args.debug and not isinstance(exc, MemoryError):
            raise
        print(f"error: {user_message(exc, hint=_DEBUG_HINT)}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, HeadmapError) else EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> int:
    """The headless CLI alone (``python main.py`` / ``headmap`` is the entry point that can also open the window)."""
    args = build_parser().parse_args(argv)
    if not is_headless(args):
        print("error: no export flag given; add --export-npz/--export-png/… or run `headmap` (`python main.py`) for the window",
              file=sys.stderr)
        return EXIT_USER_ERROR
    return headless_main(args)
