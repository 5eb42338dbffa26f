"""Run a text through a loaded model and capture every attention map into one :class:`Capture`.

* encoder / decoder: one forward pass with ``output_attentions=True``. A decoder may first continue
  the text N tokens (greedy), then prompt + continuation is captured in one pass.
* seq2seq: the target is typed (teacher forcing: ``labels = tokenizer(text_target=target)``,
  decoder inputs = ``[decoder_start] + labels[:-1]``) or generated (greedy or beam) and then captured
  in one teacher-forced pass, so decoder and cross maps are full matrices. Row t of the decoder and
  cross maps belongs to decoder input t and helps predict output token t.

Every capture is checked: shapes agree with the config and every row sums to 1 within 1e-3.

A long capture (``store=True``, or ``store=None`` and float16 maps over 256 MiB) is not held in
memory: the same forward pass runs with ``output_attentions=False`` and streams each layer's
weights into a store on disk (:mod:`analysis.stream`, :mod:`analysis.store`); its stacks are
:class:`analysis.store.StoredStack` objects, read a map at a time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np

from .errors import CaptureError, InputError, NoAttentionError, a_or_an
from .loader import LoadedModel
from .readable import WARNING, unknown_count, unknown_warning
from .result import Capture, Prediction, TokenSeq
from .store import capture_bytes, check_space, stack_cells, stack_shapes, store_wanted
from .tasks import TaskState, as_task
from .tokens import (
    display_strings,
    generated_seq,
    output_word_ids,
    special_flags,
    token_seq,
    tokenizer_style,
)

#: longest input captured by default in memory (the Python API): attention memory grows with the
#: square of the length. The window and the CLI store long captures on disk instead and default to
#: the model's maximum (:func:`default_max_tokens`)
DEFAULT_MAX_TOKENS = 1024
#: the longest input the window and the CLI take by default even when the model and the disk allow
#: more: eager attention's mask alone is a float32 N × N matrix (1 GiB at 16,384 tokens)
LONG_MAX_TOKENS = 16384
ROW_SUM_TOLERANCE = 1e-3
TOP_K = 5


def token_limit(lm: LoadedModel, max_tokens: int | None = DEFAULT_MAX_TOKENS) -> int:
    """The most tokens one capture takes: the model's positions, capped by ``max_tokens``."""
    n = lm.summary.max_positions or max_tokens or DEFAULT_MAX_TOKENS
    return int(min(n, max_tokens)) if max_tokens else int(n)


def default_max_tokens(summary, root=None, free: int | None = None) -> tuple[int, str]:
    """The window's and the CLI's default token limit for a model: its maximum positions (at most
    :data:`LONG_MAX_TOKENS`; :data:`DEFAULT_MAX_TOKENS` when it states none) where the disk of the
    stores folder has room for a capture that long, else the longest that fits (never below what
    is held in memory without a store).

    Parameters
    ----------
    summary : the model's :class:`analysis.loader.ModelSummary` (kind, stacks, max_positions)
    root, free : the stores folder and its free bytes (default: :func:`analysis.store.stores_root`, measured)

    Returns
    -------
    (the limit, a sentence saying why it is lower than the model's maximum, or "")
    """
    from .store import STORE_MIN_BYTES, stores_root, tokens_that_fit

    model_max = int(summary.max_positions or DEFAULT_MAX_TOKENS)
    limit = min(model_max, LONG_MAX_TOKENS)
    stacks = [(st.name, st.layers, st.heads) for st in summary.stacks]
    try:
        fit = tokens_that_fit(stacks, summary.kind, limit, root, free)
    except OSError:  # no cache folder to measure: the run says what is wrong
        return limit, ""
    # what stays in memory needs no disk
    in_memory = tokens_that_fit(stacks, summary.kind, limit, free=STORE_MIN_BYTES + _store_margin())
    fit = max(fit, in_memory)
    if fit >= limit:
        return limit, ""
    where = root or stores_root()
    return fit, (f"inputs are capped at {fit} tokens: the disk of {where} has room for the attention maps of "
                 f"{fit} tokens (the model takes {model_max}); free space or set HEADMAP_CACHE to a bigger disk")


def _store_margin() -> int:
    from .store import SPACE_MARGIN

    return SPACE_MARGIN


def encode(lm: LoadedModel, text: str, limit: int) -> tuple[dict, list | None, bool, str]:
    """Tokenize ``text`` to at most ``limit`` tokens.

    Returns (model inputs as torch tensors, offsets or None, truncated?, the text actually kept).
    """
    if text is None or not str(text).strip():
        raise InputError("the text is empty; type a sentence to run")
    tok = lm.tokenizer
    fast = bool(getattr(tok, "is_fast", False))
    full = tok(text, add_special_tokens=True)["input_ids"]
    truncated = len(full) > limit
    enc = tok(text, return_tensors="pt", truncation=True, max_length=limit, return_offsets_mapping=fast)
    check_ids(lm, enc["input_ids"][0].tolist(), "the text")
    offsets = enc.pop("offset_mapping")[0].tolist() if fast else None
    kept = text
    if truncated and offsets:
        end = max((e for s, e in offsets if e > s), default=len(text))
        kept = text[:end]
    enc.pop("token_type_ids", None) if getattr(lm.config, "type_vocab_size", 2) in (0, None) else None
    return dict(enc), offsets, truncated, kept


def vocabulary_size(lm: LoadedModel, decoder: bool = False) -> int | None:
    """Rows of the model's input embedding table (``decoder``: of a seq2seq decoder's), or None."""
    if decoder and getattr(lm.config, "decoder_vocab_size", None):
        return int(lm.config.decoder_vocab_size)
    try:
        return int(lm.model.get_input_embeddings().weight.shape[0])
    except Exception:  # a model without the accessor: trust its config
        v = getattr(lm.config, "vocab_size", None)
        return int(v) if v else None


def check_ids(lm: LoadedModel, ids: Sequence[int], what: str, decoder: bool = False) -> None:
    """Refuse token ids the model has no embedding for: a tokenizer that does not belong to the weights.

    Raises
    ------
    CaptureError : naming the first such id, its token and the vocabulary size
    """
    n = vocabulary_size(lm, decoder)
    if n is None:
        return
    bad = [int(i) for i in ids if not 0 <= int(i) < n]
    if bad:
        token = lm.tokenizer.convert_ids_to_tokens(bad[0]) if bad[0] >= 0 else None
        shown = f" ({token!r})" if isinstance(token, str) else ""
        raise CaptureError(
            f"the tokenizer turned {what} into id {bad[0]}{shown}, but the model's vocabulary has only {n} entries, "
            "so this tokenizer does not belong to these weights; save the model's own tokenizer into its folder "
            "(tokenizer.save_pretrained)"
        )


def to_device(batch: dict, lm: LoadedModel) -> dict:
    """``batch`` with every tensor moved to the model's (first) device."""
    dev = lm.device
    return {k: (v.to(dev) if hasattr(v, "to") else v) for k, v in batch.items()}


def stack_attentions(atts, name: str, architecture: str, expected: tuple[int, int] | None,
                     store_dtype=np.float32, batch_index: int = 0) -> np.ndarray:
    """transformers' per-layer tuple → one ``[L, H, Q, K]`` array (CPU, ``store_dtype``), checked."""
    import torch

    if atts is None or len(atts) == 0 or any(a is None for a in atts):
        raise NoAttentionError(
            f"{architecture} returned no {name}; this architecture does not expose attention maps, so Headmap cannot show it"
        )
    first = atts[0]
    if getattr(first, "ndim", 0) != 4:
        raise NoAttentionError(
            f"{architecture} returned {name} of shape {tuple(getattr(first, 'shape', ()))}, not one [head, query, key] "
            "map per layer; its attention is not a query × key map over the tokens, so Headmap cannot show it"
        )
    n_layers, (n_heads, q, k) = len(atts), tuple(first.shape[1:])
    if expected is not None and (n_layers, n_heads) != tuple(expected):
        raise CaptureError(
            f"{architecture} returned {name} of {n_layers} layers × {n_heads} heads but its config describes "
            f"{expected[0]} × {expected[1]}; its attention is not one map per configured layer and head (or the "
            "config does not belong to the model), so Headmap cannot show it"
        )
    out = np.empty((n_layers, n_heads, q, k), dtype=store_dtype)
    store_torch = torch.float16 if np.dtype(store_dtype) == np.float16 else torch.float32
    for li, a in enumerate(atts):
        m = a[batch_index].detach()
        if tuple(m.shape) != (n_heads, q, k):
            raise CaptureError(f"{name} layer {li} has shape {tuple(m.shape)}, expected {(n_heads, q, k)}")
        check_rows(m, name, li, architecture)
        out[li] = m.to("cpu", store_torch).numpy()
    return out


def available_memory() -> int | None:
    """Bytes of memory the system can give now (Linux's MemAvailable; the free pages elsewhere),
    or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(shapes, store_dtype=np.float32) -> None:
    """Refuse, before the model runs, an in-memory capture whose maps cannot fit: transformers
    returns every layer's maps as float32 (``output_attentions=True``), and the capture keeps its
    own copy in ``store_dtype`` while they are converted.

    Raises
    ------
    InputError : naming the gigabytes needed and available, and the ways out
    """
    need = stack_cells(shapes) * (4 + np.dtype(store_dtype).itemsize)
    have = available_memory()
    if have is None or need <= have:
        return
    n = max(int(s[-1]) for s in shapes)
    raise InputError(f"at {n} tokens the attention maps held in memory need about {need / 1e9:.1f} GB "
                     f"(transformers' float32 maps and the capture's copy) but {have / 1e9:.1f} GB is available; "
                     "lower max_tokens, or run it in the window or with the CLI (python main.py), which keep long "
                     "captures on disk (store=True in analysis.capture.capture)")


def check_rows(m, name: str, layer: int, architecture: str) -> None:
    """Every row of the weights ``m`` (a torch tensor ``[..., Q, K]``, any rows of one layer) sums to
    1 within :data:`ROW_SUM_TOLERANCE` (or the dtype's precision).

    Raises
    ------
    CaptureError : naming the stack, the layer and how far off the rows are
    """
    import torch

    # torch does the row check (multi-threaded, without the GIL)
    err = float((m.float().sum(-1) - 1.0).abs().max()) if m.numel() else 0.0
    # bfloat16 maps are rounded to 8 significant bits: a valid row may be off by up to ~2^-8
    tol = max(ROW_SUM_TOLERANCE, float(torch.finfo(m.dtype).eps)) if m.is_floating_point() else ROW_SUM_TOLERANCE
    if not err <= tol:
        hint = ("try dtype float32" if m.dtype != torch.float32 else
                f"{architecture}'s attention weights are not one softmax over the tokens per query, so Headmap "
                "cannot show them")
        raise CaptureError(f"{name} layer {layer}: attention rows do not sum to 1 (off by {err:.2g}); {hint}")


def _topk(tokenizer, logits_row, k: int = TOP_K) -> tuple[tuple[str, float], ...]:
    import torch

    probs = torch.softmax(logits_row.float(), dim=-1)
    p, idx = torch.topk(probs, min(k, probs.shape[-1]))
    ids = idx.tolist()
    raws = tokenizer.convert_ids_to_tokens(ids)
    sp = special_flags(tokenizer, ids)
    style = tokenizer_style(tokenizer)
    labels = [display_strings([r or "<?>"], [s], style)[0] for r, s in zip(raws, sp, strict=True)]
    return tuple((lab, float(pp)) for lab, pp in zip(labels, p.tolist(), strict=True))


def prediction_for(lm: LoadedModel, out, input_ids: Sequence[int], prompt_length: int, output_text: str,
                   logits_start: int = 0) -> Prediction:
    """What the model's head predicts in the forward pass ``out`` (batch row 0).

    Parameters
    ----------
    lm : the loaded model
    out : its output (``logits`` ``[1, N, V]`` or ``[1, C]`` for a classifier)
    input_ids : the input ids ``[N]`` (finds ``[MASK]`` positions of a masked LM)
    prompt_length : decoder: the prompt's tokens; steps are reported from its last one
    output_text : decoder continuation / seq2seq translation, kept as is
    logits_start : decoder: the position of the first row of ``out.logits`` (the model kept only
        the last rows, ``logits_to_keep``)

    Returns
    -------
    Prediction: decoder next-token top-5 (and per step), seq2seq per-step top-5, classifier labels,
    masked-LM top-5 at each ``[MASK]``; an empty Prediction without a head.
    """
    import torch

    tok = lm.tokenizer
    logits = getattr(out, "logits", None)
    head = lm.summary.head_kind
    if logits is None:
        return Prediction()
    if lm.kind == "decoder":
        lg = logits[0]
        end = logits_start + lg.shape[0]
        steps = tuple((t + 1, _topk(tok, lg[t - logits_start])) for t in range(max(prompt_length - 1, 0), end - 1))
        return Prediction("next_token", _topk(tok, lg[-1]), output_text, steps)
    if lm.kind == "seq2seq":
        lg = logits[0]
        steps = tuple((t, _topk(tok, lg[t])) for t in range(lg.shape[0]))
        return Prediction("translation", steps[0][1] if steps else (), output_text, steps)
    if head == "classification":
        probs = torch.softmax(logits[0].float(), -1)
        id2label = getattr(lm.config, "id2label", {}) or {}
        items = sorted(((str(id2label.get(i, f"LABEL_{i}")), float(p)) for i, p in enumerate(probs.tolist())),
                       key=lambda x: -x[1])
        return Prediction("classification", tuple(items))
    if head == "masked_lm":
        mask_id = getattr(tok, "mask_token_id", None)
        pos = [i for i, t in enumerate(input_ids) if mask_id is not None and t == mask_id]
        per = tuple((i, _topk(tok, logits[0, i])) for i in pos)
        return Prediction("masked_lm", per[0][1] if per else (), "", per)
    return Prediction()


def capture(
    lm: LoadedModel,
    text: str,
    target: str | None = None,
    generate: bool = False,
    max_new_tokens: int = 0,
    num_beams: int = 1,
    target_lang: str | None = None,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    store_dtype=np.float32,
    task: TaskState | None = None,
    store: bool | None = False,
    store_owner: int | None = None,
) -> Capture:
    """Capture every attention map of ``lm`` on ``text``.

    Parameters
    ----------
    lm : a loaded model (:func:`analysis.loader.load_model`)
    text : the input sentence (encoder / decoder prompt / seq2seq source)
    target : seq2seq only – a typed target for teacher forcing
    generate : seq2seq – generate the target; decoder – continue the text ``max_new_tokens``
    max_new_tokens : decoder continuation length / seq2seq generation cap (0: automatic)
    num_beams : beam search width for seq2seq generation (1 = greedy)
    target_lang : seq2seq generation – force the first target token to this language's token
        (multilingual models: ``fra_Latn`` for NLLB, ``fr`` for M2M100/mBART-50 style ``__fr__``)
    max_tokens : cap on input tokens (the model's own maximum applies too); longer text is
        truncated and the capture's ``notes`` say so
    store_dtype : float32 (exact) or float16 (half the memory) for the stored stacks
    task : progress and cancel (:class:`analysis.tasks.TaskState`): stages ``run`` and
        ``generate`` (a decoder's continuation, a seq2seq target); cancellation is checked between the model calls
        (and, for a stored capture, between the chunks of every layer)
    store : keep the maps on disk (:mod:`analysis.store`: float16, streamed layer by layer while the
        model runs, :mod:`analysis.stream`) instead of in memory: True, False, or None to decide
        (:func:`analysis.store.store_wanted`: ``HEADMAP_STORE``, else when the float16 maps exceed
        256 MiB). The stacks are then :class:`analysis.store.StoredStack` objects, read lazily; a
        disk without room is refused before the model runs (:func:`analysis.store.check_space`)
    store_owner : the pid of the process that will show a stored capture and remove its store
        (the window; default: the process that runs the capture, or the model process's window)

    Returns
    -------
    Capture with stacks ``[L, H, Q, K]``: ``attentions`` (encoder/decoder) or
    ``encoder_attentions``, ``decoder_attentions``, ``cross_attentions`` (seq2seq). Its ``notes``
    start with the model's own ``warning: …`` notes (weights filled with random values, loaded with
    ``allow_missing_weights``), then a ``warning: …`` when most of the text's tokens are unknown to
    the tokenizer (:func:`analysis.readable.unknown_warning`: how many, and a bundled model that
    reads the text).

    Raises
    ------
    CaptureError : a token id beyond the model's vocabulary (the tokenizer does not belong to the
        weights), or maps that fail the checks
    """
    import torch

    task = as_task(task)
    tok = lm.tokenizer
    # the model's own warnings (weights filled with random values) come with every capture
    notes: list[str] = [n for n in lm.notes if n.startswith(WARNING)]
    limit = token_limit(lm, max_tokens)
    if lm.kind == "decoder" and generate and max_new_tokens > 0:
        if max_new_tokens >= limit:
            raise InputError(f"cannot continue {max_new_tokens} tokens: this model takes at most {limit} tokens; ask for fewer")
        prompt_limit = limit - max_new_tokens
    else:
        prompt_limit = limit
    if target is not None and lm.kind != "seq2seq":
        raise InputError(f"a target only applies to seq2seq models; this is {a_or_an(lm.kind)} model — drop the target")
    enc, offsets, truncated, kept = encode(lm, text, prompt_limit)
    ids = enc["input_ids"][0].tolist()
    # most of the text unknown to the tokenizer: the maps would show <unk> and nonsense output
    unread = unknown_warning(unknown_count(tok, ids, offsets), kept, lm.reference)
    if unread:
        notes.append(unread)
    if truncated:
        notes.append(f"the text was truncated to {prompt_limit} tokens (the longest input this model/capture takes)")
    task.check()
    source = token_seq(tok, ids, kept, offsets)
    batch = to_device(enc, lm)
    model = lm.model
    stacks: dict[str, np.ndarray] = {}
    expected = {s.name: (s.layers, s.heads) for s in lm.summary.stacks}
    arch = lm.summary.architecture
    decoder_inputs = outputs = None
    output_text = ""
    prompt_length = len(ids)
    gen_flag = False
    task.report("run", 0.1, "running the model…")
    layers_heads = [(s.name, s.layers, s.heads) for s in lm.summary.stacks]
    # a long input is stored: decided on the input (a seq2seq target counted as long as the source),
    # so that generation before the capture already runs with chunked attention
    n_guess = len(ids) + (max_new_tokens if lm.kind == "decoder" and generate else 0)
    shapes = stack_shapes(layers_heads, lm.kind, n_guess)
    streamed = store_wanted(shapes, store)
    if not streamed:
        check_memory(shapes, store_dtype)
    long_pass = _stream_mod().chunked(model) if streamed else nullcontext()
    with torch.inference_mode():
        if lm.kind == "seq2seq":
            if generate and (target is None or not str(target).strip()):
                task.report("generate", 0.2, "generating the target…")
            with long_pass:
                dec_ids, out_ids, output_text, gen_flag = seq2seq_target(lm, batch, target, generate, max_new_tokens,
                                                                        num_beams, limit, notes, target_lang)
            task.check()
            call_args = {**batch, "decoder_input_ids": torch.tensor([dec_ids], device=lm.device), "use_cache": False}
            names: tuple[str, ...] = ("encoder_attentions", "decoder_attentions", "cross_attentions")
            decoder_inputs = generated_seq(tok, dec_ids)
            outputs = generated_seq(tok, out_ids)
        else:
            if lm.kind == "decoder" and generate and max_new_tokens > 0:
                task.report("generate", 0.2, f"continuing the text {max_new_tokens} tokens…")
                pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
                with long_pass:
                    gen = model.generate(**batch, **generation_length(model, max_new_tokens, len(ids)),
                                         do_sample=False, num_beams=1, pad_token_id=pad)
                full = gen[0].tolist()
                cont = full[len(ids):]
                output_text = tok.decode(cont, skip_special_tokens=True)
                gen_flag = True
                task.check()
                batch = {"input_ids": gen, "attention_mask": torch.ones_like(gen)}
                csp = special_flags(tok, cont)
                cont_words = output_word_ids(tok, cont, list(csp))
                base = max(source.word_ids, default=-1) + 1
                source = TokenSeq(
                    np.array(full), source.raw + tuple(_raw(tok, cont)),
                    tuple(display_strings(list(source.raw) + list(_raw(tok, cont)),
                                          list(source.special) + list(csp), tokenizer_style(tok))),
                    np.concatenate([source.special, csp]),
                    source.word_ids + tuple(w + base if w >= 0 else -1 for w in cont_words),
                )
            call_args = {**batch, "use_cache": False} if lm.kind == "decoder" else dict(batch)
            names = ("attentions",)
        logits_start = 0
        if streamed:
            n_t = len(decoder_inputs) if decoder_inputs is not None else None
            check_space(capture_bytes(stack_shapes(layers_heads, lm.kind, len(source), n_t)))
            if lm.kind == "decoder" and _takes(model, "logits_to_keep"):
                # only the logits the prediction reads: all of them would take N × vocabulary floats
                # (SmolLM2 at 8,192 tokens: 1.6 GB)
                logits_start = max(prompt_length - 1, 0)
                call_args["logits_to_keep"] = len(source) - logits_start
            out, stacks = _capture_stored(lm, call_args, names, expected, store_owner, task)
        else:
            out = model(**call_args, output_attentions=True)
            for name in names:
                stacks[name] = stack_attentions(getattr(out, name, None), name, arch, expected.get(name), store_dtype)
    task.check()
    _check_lengths(stacks, source, decoder_inputs)
    pred = prediction_for(lm, out, source.ids.tolist(), prompt_length, output_text, logits_start)
    return Capture(
        model=lm.reference, kind=lm.kind, architecture=arch, text=kept, source=source, stacks=stacks,
        target=(target if target is not None else (output_text if lm.kind == "seq2seq" else None)),
        decoder_inputs=decoder_inputs, outputs=outputs, output_text=output_text,
        prompt_length=prompt_length, generated=gen_flag, truncated=truncated, notes=tuple(notes), prediction=pred,
        token_style=getattr(lm.summary, "token_style", "") or "",
    )


def _stream_mod():
    from . import stream

    return stream


def _takes(model, name: str) -> bool:
    """Whether ``model.forward`` takes the keyword ``name``."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def _capture_stored(lm: LoadedModel, call_args: dict, names: tuple[str, ...], expected: dict, owner: int | None,
                    task: TaskState) -> tuple[object, dict]:
    """The forward pass of ``call_args`` with every stack of ``names`` written to a new store
    (:mod:`analysis.stream`); returns the model's output and the stored stacks.

    The store is removed again when anything fails or the task is cancelled."""
    from .store import StoreWriter, write_stacks

    stream = _stream_mod()
    model, arch = lm.model, lm.summary.architecture
    plan = None
    if stream.streamable(model):
        n = stream.PROBE_TOKENS
        probe_args = {k: (v[:, :n] if getattr(v, "ndim", 0) == 2 and k != "decoder_input_ids" else v)
                      for k, v in call_args.items() if k != "logits_to_keep"}
        if "decoder_input_ids" in probe_args:
            probe_args["decoder_input_ids"] = probe_args["decoder_input_ids"][:, :2]
        try:
            plan = stream.probe(model, lambda: model(**probe_args, output_attentions=True),
                                {k: v[0] for k, v in expected.items()})
        except stream.StreamUnsupported:
            plan = None
    if plan is None:  # not streamable: the maps of every layer at once, then stored layer by layer
        out = model(**call_args, output_attentions=True)
        held = {name: stack_attentions(getattr(out, name, None), name, arch, expected.get(name), np.float16)
                for name in names}
        task.check()
        st = write_stacks(held, owner=_owner(owner), task=task)
        return out, dict(st.stacks)
    missing = [name for name in names if name not in plan.layers()]
    if missing:
        raise NoAttentionError(f"{arch} returned no {missing[0]}; this architecture does not expose attention maps, "
                               "so Headmap cannot show it")
    total = sum(plan.layers().values())
    done = [0]

    def on_layer(name: str, layer: int) -> None:
        done[0] += 1
        task.report("run", 0.1 + 0.85 * done[0] / total, f"running the model: layer {done[0]} of {total}…")

    writer = StoreWriter(_owner(owner), on_layer=on_layer)
    try:
        out = stream.run(model, plan, lambda: model(**call_args, output_attentions=False), writer,
                         lambda w, name, layer: check_rows(w, name, layer, arch), task)
        task.check()
        st = writer.finish()
    except BaseException:
        writer.abort()
        raise
    for name in names:
        want = expected.get(name)
        got = st.stacks[name].shape[:2]
        if want is not None and tuple(got) != tuple(want):
            raise CaptureError(f"{arch} returned {name} of {got[0]} layers × {got[1]} heads but its config describes "
                               f"{want[0]} × {want[1]}; its attention is not one map per configured layer and head (or "
                               "the config does not belong to the model), so Headmap cannot show it")
    return out, dict(st.stacks)


def _owner(owner: int | None) -> int | None:
    from . import store

    return owner or store.DEFAULT_OWNER


def generation_length(model, new_tokens: int, prompt_length: int) -> dict[str, int]:
    """How long ``model.generate`` may run, as the one setting the model's own generation config
    does not contradict: ``max_length`` (prompt + ``new_tokens``) when its generation config sets
    ``max_length`` (and no ``max_new_tokens``), else ``max_new_tokens``. Both mean the same limit.

    transformers 5 logs "Both `max_new_tokens` … and `max_length` … seem to have been set" on
    every call that passes ``max_new_tokens`` to a model whose ``generation_config.json`` sets
    ``max_length`` (the bundled translators' says 64; most Marian checkpoints' say 512).

    Parameters
    ----------
    model : a transformers model with ``generate``
    new_tokens : the most tokens to generate
    prompt_length : tokens the generated sequence starts with (decoder: the prompt; seq2seq: the
        decoder start token, 1)
    """
    own = getattr(model, "generation_config", None)
    if own is not None and getattr(own, "max_length", None) is not None and getattr(own, "max_new_tokens", None) is None:
        return {"max_length": int(prompt_length) + int(new_tokens)}
    return {"max_new_tokens": int(new_tokens)}


def _raw(tok, ids) -> list[str]:
    return [r if r is not None else "<?>" for r in tok.convert_ids_to_tokens([int(i) for i in ids])]


def decoder_start_id(lm: LoadedModel) -> int:
    for src in (getattr(lm.model, "generation_config", None), lm.config):
        v = getattr(src, "decoder_start_token_id", None) if src is not None else None
        if v is not None:
            return int(v)
    for v in (lm.config.pad_token_id, lm.config.bos_token_id, lm.tokenizer.pad_token_id):
        if v is not None:
            return int(v)
    raise CaptureError("this seq2seq model has no decoder_start_token_id in its config; set one in config.json")


def language_token_id(tokenizer, lang: str) -> int:
    """The id of a multilingual model's target-language token (``fra_Latn``, ``__fr__``, ``>>fr<<``)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    for cand in (lang, f"__{lang}__", f">>{lang}<<", f"<{lang}>", f"<2{lang}>"):
        tid = tokenizer.convert_tokens_to_ids(cand)
        if isinstance(tid, int) and tid != unk and tid >= 0:
            return tid
    raise InputError(f"this tokenizer has no language token for '{lang}'; use the model's own code "
                     "(e.g. fra_Latn for NLLB, fr for M2M100)")


def seq2seq_target(
    lm: LoadedModel,
    batch: dict,
    target: str | None,
    generate: bool,
    max_new_tokens: int,
    num_beams: int,
    limit: int,
    notes: list[str],
    target_lang: str | None = None,
) -> tuple[list[int], list[int], str, bool]:
    """The decoder side of a seq2seq capture: typed (teacher forcing) or generated.

    Parameters
    ----------
    lm : a seq2seq model
    batch : the encoder inputs (``input_ids`` ``[1, S]``, ``attention_mask``) on the model's device
    target : a typed target, or None to generate one (``generate`` must then be True)
    generate : generate when ``target`` is None or empty
    max_new_tokens : generation cap (0: ``min(limit, 256)``)
    num_beams : beam width (1 = greedy)
    limit : the most target tokens kept when a typed target is tokenized
    notes : remarks are appended here (a truncated target)
    target_lang : force the first generated token to this language's token

    Returns
    -------
    (decoder input ids ``[T]``, output ids ``[T]``, output text, whether it was generated)
    """
    tok = lm.tokenizer
    start = decoder_start_id(lm)
    if target is not None and str(target).strip():
        full = tok(text_target=target)["input_ids"]
        labels = tok(text_target=target, truncation=True, max_length=limit)["input_ids"]
        check_ids(lm, labels, "the target", decoder=True)
        if len(full) > len(labels):
            notes.append(f"the target was truncated to {limit} tokens (the model's maximum)")
        dec = [start] + labels[:-1]
        return dec, list(labels), tok.decode(labels, skip_special_tokens=True), False
    if target is not None and not generate:
        raise InputError("the target is empty; type a target sentence or choose Translate")
    new = max_new_tokens if max_new_tokens > 0 else min(limit, 256)
    extra = {}
    if target_lang:
        extra["forced_bos_token_id"] = language_token_id(tok, target_lang)
    # the decoder starts from one token (decoder_start_token_id): max_length = 1 + new tokens
    gen = lm.model.generate(**batch, **generation_length(lm.model, new, 1), num_beams=max(1, num_beams),
                            do_sample=False, **extra, early_stopping=True if num_beams > 1 else False)
    seq = gen[0].tolist()
    pad = tok.pad_token_id
    # drop trailing padding (beam search pads finished hypotheses), keep the final EOS
    while len(seq) > 2 and pad is not None and seq[-1] == pad and pad != start:
        seq.pop()
    if len(seq) < 2:
        raise CaptureError("the model generated nothing; try another sentence")
    return seq[:-1], seq[1:], tok.decode(seq[1:], skip_special_tokens=True), True


def _check_lengths(stacks: dict, source: TokenSeq, dec: TokenSeq | None) -> None:
    s, t = len(source), (len(dec) if dec is not None else None)
    want = {"attentions": (s, s), "encoder_attentions": (s, s), "decoder_attentions": (t, t), "cross_attentions": (t, s)}
    for name, arr in stacks.items():
        if tuple(arr.shape[2:]) != want[name]:
            raise CaptureError(f"{name} has query×key {arr.shape[2:]} but the tokens say {want[name]}; the model's "
                               "attention is not one map over all the tokens (windowed, chunked or pooled), so "
                               "Headmap refuses to show it")
