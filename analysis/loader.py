"""Load any encoder, decoder or seq2seq checkpoint with attention maps switched on.

One public entry point, :func:`load_model`, takes

* a hub id (``bert-base-uncased``, ``Helsinki-NLP/opus-mt-en-fr``) – taken from the local Hugging Face
  cache when it is there, downloaded otherwise;
* a local folder written by ``save_pretrained``;
* a ``.gguf`` file (dequantized once into a cache folder, reused after);
* ``bundled:NAME`` (see :mod:`analysis.bundled`).

The model kind (``encoder`` / ``decoder`` / ``seq2seq``) is decided from the config, never from a
list of model names, and the class that keeps the LM / classification head is loaded. Attention is
always the eager implementation: SDPA and flash attention return no maps.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from . import derived
from .bundled import BUNDLED, bundled_path, sha256_file
from .consent import CodeConsent, check_remote_code
from .derived import cache_dir
from .errors import (
    ConsentRequiredError,
    HeadmapError,
    InputError,
    MissingWeightsError,
    ModelLoadError,
    NoAttentionError,
    RemoteCodeError,
)
from .result import RANDOM_WEIGHTS, Kind
from .tasks import TaskState, as_task

DTYPES = ("auto", "float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda", "mps")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "source.spm",
    "tokenizer.model",
)


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StackInfo:
    name: str  # npz / transformers output name
    layers: int
    heads: int


@dataclass(frozen=True)
class ModelSummary:
    """What the model card shows."""

    reference: str
    kind: Kind
    architecture: str
    model_type: str
    stacks: tuple[StackInfo, ...]
    n_params: int
    dtype: str
    device: str
    memory_bytes: int
    max_positions: int | None
    has_lm_head: bool
    head_kind: str  # lm / classification / masked_lm / none
    source_path: str
    token_style: str = ""  # wordpiece / sentencepiece / byte-bpe / word (analysis.tokens.style_name)

    def lines(self) -> list[str]:
        out = [
            f"Kind: {self.kind}",
            f"Architecture: {self.architecture} ({self.model_type})",
        ]
        for s in self.stacks:
            out.append(f"{s.name}: {s.layers} layers × {s.heads} heads")
        out += [
            f"Parameters: {self.n_params / 1e6:.1f} M",
            f"Memory: {self.memory_bytes / 2**20:.0f} MiB",
            f"dtype: {self.dtype}   device: {self.device}",
        ]
        if self.max_positions:
            out.append(f"Max positions: {self.max_positions}")
        return out


@dataclass
class LoadedModel:
    """A loaded model + tokenizer. Mutable (it holds torch objects); captures are immutable."""

    reference: str
    kind: Kind
    model: Any
    tokenizer: Any
    config: Any
    summary: ModelSummary
    path: Path
    notes: list[str] = field(default_factory=list)

    @property
    def device(self):
        return next(self.model.parameters()).device


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def detect_kind(config) -> Kind:
    """``encoder`` / ``decoder`` / ``seq2seq`` from a transformers config.

    Order: ``is_encoder_decoder`` → seq2seq; an architecture with a causal-LM head or the
    ``is_decoder`` flag → decoder; a model type transformers registers only for causal LM
    (e.g. gpt2, llama) → decoder; anything else (BERT family) → encoder.
    """
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    archs = list(getattr(config, "architectures", None) or [])
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "decoder"
    if getattr(config, "is_decoder", False):
        return "decoder"
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    mt = getattr(config, "model_type", "")
    if mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "decoder"
    return "encoder"


def _cfg(config, *names, default=None):
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


def stack_infos(config, kind: Kind) -> tuple[StackInfo, ...]:
    """Layers and heads of each attention stack, from the config."""
    if kind == "seq2seq":
        el = _cfg(config, "encoder_layers", "num_layers", "num_hidden_layers")
        dl = _cfg(config, "decoder_layers", "num_decoder_layers", "num_layers", "num_hidden_layers")
        eh = _cfg(config, "encoder_attention_heads", "num_heads", "num_attention_heads")
        dh = _cfg(config, "decoder_attention_heads", "num_heads", "num_attention_heads")
        return (
            StackInfo("encoder_attentions", int(el), int(eh)),
            StackInfo("decoder_attentions", int(dl), int(dh)),
            StackInfo("cross_attentions", int(dl), int(dh)),
        )
    layers = _cfg(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    heads = _cfg(config, "num_attention_heads", "n_head", "num_heads", "n_heads")
    return (StackInfo("attentions", int(layers), int(heads)),)


def max_positions(config, tokenizer=None) -> int | None:
    """Longest input the model accepts (position table), or None when unbounded (relative)."""
    n = _cfg(config, "max_position_embeddings", "n_positions", "max_seq_len", "n_ctx")
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") and n:
        n = int(n) - 2  # positions start after padding_idx
    tok_max = getattr(tokenizer, "model_max_length", None) if tokenizer is not None else None
    if tok_max is not None and tok_max < 10**6:
        n = min(int(n), int(tok_max)) if n else int(tok_max)
    return int(n) if n else None


def _torch_dtype(name: str, device: str, config):
    import torch

    if name not in DTYPES:
        raise InputError(f"unknown dtype '{name}'; choose one of: {', '.join(DTYPES)}")
    if name == "auto":
        # transformers 5 reads a config's torch_dtype into dtype; the old attribute only logs a deprecation
        cfg = getattr(config, "dtype", None)
        if device != "cpu" and cfg in (torch.float16, torch.bfloat16, "float16", "bfloat16"):
            return getattr(torch, str(cfg).replace("torch.", ""))
        return torch.float32
    return getattr(torch, name)


def available_devices() -> list[str]:
    import torch

    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


def device_choices(task: TaskState | None = None) -> list[str]:
    """:func:`available_devices` as a job function (the window asks its model process, so that
    its own process never imports torch)."""
    return available_devices()


def _resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise InputError(f"unknown device '{device}'; choose one of: {', '.join(DEVICES)}")
    have = available_devices()
    if device not in have:
        raise InputError(f"device '{device}' is not available on this machine; choose one of: {', '.join(have)}")
    if device == "auto":
        return "cuda" if "cuda" in have else ("mps" if "mps" in have else "cpu")
    return device


def hub_reachable(timeout: float = 2.0) -> bool:
    """Quick check (DNS + TCP) that the Hugging Face hub can be reached."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# resolving a reference to files on disk
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resolved:
    folder: Path
    gguf_file: str | None = None
    bundled: str | None = None


def resolve_reference(ref: str, task: TaskState | None = None) -> Resolved:
    """Turn a model reference into a local folder (downloading from the hub if needed).

    ``task`` reports the download (stage ``download``) and can cancel before it starts.
    """
    ref = (ref or "").strip()
    if not ref:
        raise InputError("no model given; choose a bundled model, a folder, a .gguf file or a hub id")
    if ref.startswith("bundled:"):
        name = ref.split(":", 1)[1]
        path = bundled_path(name)
        if path.suffix == ".gguf":
            return Resolved(path.parent, path.name, name)
        return Resolved(path, None, name)
    p = Path(ref).expanduser()
    if p.exists():
        if p.is_dir():
            return Resolved(p.resolve())
        if p.suffix.lower() == ".gguf":
            return Resolved(p.resolve().parent, p.name)
        raise ModelLoadError(f"{ref} is a file but not a .gguf model; give the checkpoint folder that holds config.json instead")
    looks_like_path = ref.startswith(("/", ".", "~")) or "\\" in ref or ref.count("/") > 1 or ref.endswith(".gguf")
    if looks_like_path or not _HUB_ID.match(ref):
        raise ModelLoadError(f"{ref} does not exist; check the path, or give a hub id like 'bert-base-uncased'")
    return Resolved(_hub_snapshot(ref, as_task(task)))


def _hub_snapshot(repo_id: str, task: TaskState) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.spm", "*.txt", "*.tiktoken", "tokenizer*", "*.py"]
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns))
    except Exception:
        pass
    if not hub_reachable():
        raise ModelLoadError(
            f"'{repo_id}' is not in the local cache and the hub is unreachable; "
            "connect to the internet once, or open a local folder or a bundled model"
        )
    task.step("download", None, f"downloading {repo_id} from the Hugging Face hub…")
    # in every huggingface_hub that transformers 5 accepts (the module exists since 0.23)
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns))
    except GatedRepoError as exc:
        raise ModelLoadError(f"'{repo_id}' is gated on the hub; accept its licence and log in with `hf auth login`") from exc
    except RepositoryNotFoundError as exc:
        raise ModelLoadError(f"there is no model '{repo_id}' on the Hugging Face hub; check the spelling") from exc
    except Exception as exc:
        raise ModelLoadError(f"downloading '{repo_id}' failed ({exc}); check your connection and try again") from exc
    if not list(folder.glob("*.safetensors")):
        # only pickle weights exist: fetch them (loading still needs consent)
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=patterns + ["*.bin"]))
        except Exception as exc:
            raise ModelLoadError(f"downloading the weights of '{repo_id}' failed ({exc}); try again") from exc
    return folder


def check_folder(folder: Path, allow_pickle: bool) -> None:
    """A folder must hold a config, a tokenizer and weights (safetensors preferred)."""
    if not (folder / "config.json").exists():
        raise ModelLoadError(
            f"{folder} has no config.json, so it is not a checkpoint written by save_pretrained; "
            "choose the folder that holds config.json"
        )
    if not any((folder / f).exists() for f in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"{folder} has no tokenizer files (tokenizer.json, vocab.txt, …); "
            "save the tokenizer into the folder with tokenizer.save_pretrained(folder)"
        )
    safes = list(folder.glob("*.safetensors"))
    pickles = list(folder.glob("pytorch_model*.bin"))
    if not safes and not pickles:
        raise ModelLoadError(f"{folder} has no weights (model.safetensors); the download may be incomplete — fetch it again")
    if not safes and pickles and not allow_pickle:
        raise ConsentRequiredError(
            f"{folder} only has pickle weights (pytorch_model.bin), which can run code when loaded; "
            "load them only if you trust the source (window: confirm; CLI: --allow-pickle)"
        )


def _needs_remote_code(folder: Path) -> bool:
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{folder / 'config.json'} is not valid JSON ({exc}); the download may be incomplete") from exc
    if "auto_map" not in raw:
        return False
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return raw.get("model_type") not in CONFIG_MAPPING_NAMES


# --------------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------------
def _gguf_cache_folder(gguf: Path, bundled: str | None) -> Path:
    st = gguf.stat()
    key = sha256_file(gguf)[:16] if bundled else f"{st.st_size:x}-{st.st_mtime_ns:x}"
    return cache_dir() / "gguf" / f"{gguf.stem}-{key}"


def _gguf_what(gguf: Path) -> str:
    return f"dequantized copy of {gguf.name}"


def dequantize_gguf(gguf: Path, bundled: str | None, task: TaskState | None = None,
                    notes: list[str] | None = None) -> Path:
    """Dequantize a GGUF file once into a ``save_pretrained``-style cache folder; reuse it after.

    The folder is a derived cache entry (:mod:`analysis.derived`): built aside and renamed into
    place, its files' sizes and sha256 recorded, checked on every use and rebuilt when damaged.
    ``task`` reports stage ``dequantize`` and is checked for cancellation between the steps;
    ``notes`` receives the sentence saying that a damaged copy was rebuilt.
    """
    entry = derived.ensure(
        _gguf_cache_folder(gguf, bundled), partial(_write_dequantized, gguf, as_task(task)), what=_gguf_what(gguf),
        message=f"dequantizing {gguf.name} (once; reused next time)…", stage="dequantize", source=str(gguf),
        task=task,
    )
    if entry.repaired and notes is not None:
        notes.append(entry.repaired)
    return entry.path


def _write_dequantized(gguf: Path, task: TaskState, folder: Path, reserve) -> None:
    """A :data:`analysis.derived.Builder`: the dequantized model and its tokenizer, into ``folder``."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        task.check()
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except HeadmapError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"could not dequantize {gguf.name} ({type(exc).__name__}: {str(exc)[:200]}); "
            "the file may be damaged or use a quantization transformers cannot read"
        ) from exc
    task.check()
    task.step("dequantize", 0.9, "writing the dequantized cache…")
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    if not getattr(cfg, "architectures", None):
        cfg.architectures = [type(model).__name__]
    cfg.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    tok.save_pretrained(folder)
    # the weights are nearly all of it (tied tensors are written once): their room is checked first
    unique = {t.data_ptr(): t.numel() * t.element_size() for t in model.state_dict().values()}
    written = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    reserve(sum(unique.values()) + written + 4096)
    save_model(model, str(folder / "model.safetensors"))


# --------------------------------------------------------------------------------------------
# memory guard
# --------------------------------------------------------------------------------------------
def estimate_params(config, kind: Kind, trust_remote_code: bool = False) -> int:
    """Parameter count from the config alone (a model built on the meta device: no memory)."""
    import torch

    cls = _auto_class(kind, config)
    # Auto classes ask on stdin whether to run a repo's own code unless told: pass the user's answer
    extra = {"trust_remote_code": trust_remote_code} if cls.__name__.startswith("Auto") else {}
    # Auto classes have from_config; a concrete class (an encoder's saved head) only _from_config
    build = getattr(cls, "from_config", None) or cls._from_config
    try:
        with torch.device("meta"):
            m = build(config, attn_implementation="eager", **extra)
        return sum(p.numel() for p in m.parameters())
    except Exception:
        h = int(_cfg(config, "hidden_size", "d_model", "n_embd", default=768))
        n_layers = sum(s.layers for s in stack_infos(config, kind)[:2])
        v = int(_cfg(config, "vocab_size", default=30000))
        return 12 * h * h * n_layers + v * h


def check_memory(config, kind: Kind, dtype, device: str, trust_remote_code: bool = False) -> tuple[int, str | None]:
    """Estimated bytes and a warning; raises :class:`ConsentRequiredError` above the free memory."""
    import psutil
    import torch

    n = estimate_params(config, kind, trust_remote_code)
    need = n * torch.tensor([], dtype=dtype).element_size()
    if device == "cuda":
        free = torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else 0
        free += psutil.virtual_memory().available  # device_map="auto" spills to the CPU
    else:
        free = psutil.virtual_memory().available
    gib = 2**30
    if need > 0.9 * free:
        lower = "bfloat16 or float16" if dtype == torch.float32 else "a smaller model"
        raise ConsentRequiredError(
            f"this model needs about {need / gib:.1f} GiB in {str(dtype).replace('torch.', '')} but only "
            f"{free / gib:.1f} GiB are free; choose dtype {lower}, or close other programs"
        )
    warn = None
    if need > 0.5 * free:
        warn = f"this model takes about {need / gib:.1f} GiB of the {free / gib:.1f} GiB free memory"
    return need, warn


# --------------------------------------------------------------------------------------------
# the loader
# --------------------------------------------------------------------------------------------
def _auto_class(kind: Kind, config):
    import transformers

    if kind == "seq2seq":
        return transformers.AutoModelForSeq2SeqLM
    if kind == "decoder":
        return transformers.AutoModelForCausalLM
    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None and hasattr(cls, "from_pretrained"):
            return cls
    return transformers.AutoModel


def _head_kind(model, kind: Kind) -> str:
    if kind in ("decoder", "seq2seq"):
        return "lm"
    name = type(model).__name__
    if name.endswith("ForMaskedLM") or name.endswith("ForPreTraining"):
        return "masked_lm"
    if name.endswith("ForSequenceClassification"):
        return "classification"
    return "none"


def load_model(
    ref: str,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool | CodeConsent | None = False,
    allow_pickle: bool = False,
    memory_check: bool = True,
    task: TaskState | None = None,
    allow_missing_weights: bool = False,
) -> LoadedModel:
    """Load a checkpoint for attention capture.

    Parameters
    ----------
    ref : hub id, folder, ``.gguf`` file or ``bundled:NAME``
    dtype : ``auto`` | ``float32`` | ``float16`` | ``bfloat16`` (auto: float32 on CPU)
    device : ``auto`` | ``cpu`` | ``cuda`` | ``mps``; ``auto`` on a GPU machine uses accelerate's
        ``device_map="auto"`` (spreads a large model over the GPUs and the CPU)
    trust_remote_code : allow the checkpoint's own Python code (off by default): ``True`` for this
        ``ref`` (the CLI flag), or a :class:`~analysis.consent.CodeConsent` that must name this
        checkpoint and the sha256 of its current code files (the window)
    allow_pickle : allow ``pytorch_model.bin`` weights (loaded with ``weights_only``)
    task : progress and cancel (:class:`analysis.tasks.TaskState`); stages ``resolve``,
        ``download``, ``dequantize``, ``load``, ``ready``; cancellation is checked between them
        (raises :class:`~analysis.errors.Cancelled`)
    allow_missing_weights : load a checkpoint whose weights lack tensors its config describes
        (transformers fills them with random values). Off by default: such a load raises
        :class:`~analysis.errors.MissingWeightsError` naming them; on, the model's ``notes`` start
        with a ``warning: …`` that every capture repeats.

    Returns
    -------
    LoadedModel; its ``notes`` also say when Headmap's cached copy of a ``.gguf`` model was
    damaged and has been rebuilt (:mod:`analysis.derived`).

    Raises
    ------
    HeadmapError subclasses with one sentence saying what to do.
    """
    task = as_task(task)
    task.report("resolve", 0.0, f"finding {ref}…")
    res = resolve_reference(ref, task)
    task.check()
    cache_notes: list[str] = []
    folder = res.folder
    if res.gguf_file:
        folder = dequantize_gguf(res.folder / res.gguf_file, res.bundled, task, cache_notes)
    opts = _LoadOptions(dtype, device, trust_remote_code, allow_pickle, memory_check, allow_missing_weights)
    try:
        lm = _load_folder(ref, folder, opts, task)
    except ModelLoadError as exc:
        # a cached copy that passed the cheap check but does not load: hash it, rebuild it if damaged
        if not res.gguf_file or (isinstance(exc, ConsentRequiredError) and not isinstance(exc, MissingWeightsError)):
            raise
        _repair_gguf(res, folder, exc, task, cache_notes)
        lm = _load_folder(ref, folder, opts, task)
    lm.notes[:0] = cache_notes
    done = f"loaded {ref}" + ("; its damaged cached copy was rebuilt" if cache_notes else "")
    task.report("ready", 1.0, done)
    return lm


@dataclass(frozen=True)
class _LoadOptions:
    dtype: str
    device: str
    trust_remote_code: bool | CodeConsent | None
    allow_pickle: bool
    memory_check: bool
    allow_missing_weights: bool


def _repair_gguf(res: Resolved, folder: Path, exc: ModelLoadError, task: TaskState, notes: list[str]) -> None:
    """After a failed load from the dequantized cache: the full check; raises ``exc`` again when the
    copy is intact (the failure is not the cache's), else rebuilds it and notes so."""
    problem = derived.inspect(folder, full=True)
    if problem is None:
        raise exc
    assert res.gguf_file is not None
    gguf = res.folder / res.gguf_file
    entry = derived.rebuild(folder, partial(_write_dequantized, gguf, task), what=_gguf_what(gguf), problem=problem,
                            stage="dequantize", source=str(gguf), task=task)
    if entry.repaired:
        notes.append(entry.repaired)


def _load_folder(ref: str, folder: Path, opts: _LoadOptions, task: TaskState) -> LoadedModel:
    """Config, tokenizer and weights of a checkpoint folder (every check on the way)."""
    check_folder(folder, opts.allow_pickle)  # before importing transformers: bad folders fail fast
    # consent covers one checkpoint and its code as hashed now (analysis.consent)
    trust_remote_code = check_remote_code(ref, folder, _needs_remote_code(folder), opts.trust_remote_code)
    dev = _resolve_device(opts.device)
    task.report("load", 0.1, "reading the config…")
    config = _read_config(ref, folder, trust_remote_code)
    check_attention(ref, config)
    kind = detect_kind(config)
    tdtype = _torch_dtype(opts.dtype, dev, config)
    notes: list[str] = []
    if opts.memory_check:
        _, warn = check_memory(config, kind, tdtype, dev, trust_remote_code)
        if warn:
            notes.append(warn)
    task.step("load", 0.3, "loading the tokenizer…")
    tokenizer = _read_tokenizer(ref, folder, trust_remote_code)
    task.step("load", 0.5, "loading the weights…")
    spread = dev == "cuda" and opts.device == "auto"  # accelerate places the layers itself
    model, missing = _read_weights(ref, folder, kind, config, tdtype, trust_remote_code, device_map=spread)
    if missing:
        # a missing task head (one Headmap adds to a bare checkpoint) leaves the maps alone: a warning
        if not opts.allow_missing_weights and not head_only(missing):
            raise missing_weights_error(ref, missing)
        notes.insert(0, missing_weights_warning(ref, missing))
    task.check()
    if not spread and dev != "cpu":
        model.to(dev)
    model.eval()
    impl = getattr(model.config, "_attn_implementation", "eager")
    if impl not in ("eager", None):
        raise NoAttentionError(f"{type(model).__name__} runs with '{impl}' attention, which returns no attention maps; it cannot be shown")
    summary = model_summary(ref, kind, model, config, tokenizer, folder)
    return LoadedModel(ref, kind, model, tokenizer, config, summary, folder, notes)


def _remote_code_error(ref: str) -> RemoteCodeError:
    return RemoteCodeError(f"{ref} needs custom code (trust_remote_code) to load; enable it only if you trust its author")


def _read_config(ref: str, folder: Path, trust_remote_code: bool):
    import transformers

    try:
        return transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except Exception as exc:
        if isinstance(exc, ValueError) and "trust_remote_code" in str(exc):
            raise _remote_code_error(ref) from exc
        raise ModelLoadError(f"the config of {ref} cannot be read ({exc}); is the folder complete?") from exc


def _read_tokenizer(ref: str, folder: Path, trust_remote_code: bool):
    import transformers

    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelLoadError(f"the tokenizer of {ref} cannot be loaded ({type(exc).__name__}: {str(exc)[:160]}); save it with tokenizer.save_pretrained") from exc


def _read_weights(ref: str, folder: Path, kind: Kind, config, tdtype, trust_remote_code: bool, *,
                  device_map: bool) -> tuple[Any, tuple[str, ...]]:
    """The model with its head, eager attention, in ``tdtype`` (``device_map="auto"`` if asked), and
    the names of the weights the checkpoint lacks (transformers initialised them randomly)."""
    cls = _auto_class(kind, config)
    kwargs: dict[str, Any] = {
        "attn_implementation": "eager",
        "dtype": tdtype,
        "trust_remote_code": trust_remote_code,
        # the reliable report of missing weights (transformers 5 also logs them, below our verbosity)
        "output_loading_info": True,
    }
    if not list(folder.glob("*.safetensors")):
        kwargs["use_safetensors"] = False
    if device_map:
        kwargs["device_map"] = "auto"
    try:
        model, info = cls.from_pretrained(str(folder), **kwargs)
    except HeadmapError:
        raise
    except Exception as exc:
        msg = str(exc)
        if "trust_remote_code" in msg:
            raise _remote_code_error(ref) from exc
        if any(s in msg.lower() for s in ("deserializ", "header", "safetensor", "invalid", "truncat", "eof", "corrupt")):
            raise ModelLoadError(f"the weights of {ref} are damaged or incomplete ({msg[:160]}); download or copy the model again") from exc
        raise ModelLoadError(f"{ref} could not be loaded ({type(exc).__name__}: {msg[:200]}); check that it is a transformers checkpoint") from exc
    return model, tuple(sorted((info or {}).get("missing_keys") or ()))


# --------------------------------------------------------------------------------------------
# checkpoints that are not what they claim
# --------------------------------------------------------------------------------------------
#: module names whose weights only feed a task head (predictions), never the attention maps
_HEAD_MODULES = frozenset({
    "lm_head", "cls", "classifier", "pooler", "qa_outputs", "score", "pre_classifier", "final_logits_bias",
    "generator_lm_head", "vocab_transform", "vocab_projector", "vocab_layer_norm", "lm_loss", "predictions",
})


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def missing_groups(names: tuple[str, ...] | list[str]) -> list[str]:
    """Missing weight names grouped by layer: ``["encoder.layer.1 (16 tensors)", "pooler.dense.bias"]``."""
    groups: dict[str, int] = {}
    for name in names:
        parts = name.split(".")
        idx = next((i for i, p in enumerate(parts) if p.isdigit()), None)
        key = ".".join(parts[: idx + 1]) if idx is not None else name
        groups[key] = groups.get(key, 0) + 1
    return [f"{k} ({n} tensors)" if n > 1 else k for k, n in sorted(groups.items(), key=lambda kv: _natural(kv[0]))]


def head_only(missing: tuple[str, ...] | list[str]) -> bool:
    """Whether every missing weight belongs to a task head (LM head, classifier, pooler): those
    change the predictions, never the attention maps."""
    return all(_HEAD_MODULES.intersection(name.split(".")) for name in missing)


def _shown(missing: tuple[str, ...]) -> str:
    """The missing weights by layer, at most four groups named."""
    groups = missing_groups(missing)
    return ", ".join(groups[:4]) + (f" and {len(groups) - 4} more" if len(groups) > 4 else "")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def missing_weights_error(ref: str, missing: tuple[str, ...]) -> MissingWeightsError:
    """The refusal of a checkpoint that lacks weights its config describes (beyond a task head)."""
    err = MissingWeightsError(
        f"the weights of {ref} lack {_count(len(missing), 'tensor')} that its config describes ({_shown(missing)}); "
        "transformers would fill them with random values, so its attention maps would change from run to run — "
        "use a complete checkpoint (or a config with no more layers than the weights hold), or load it anyway "
        "(CLI: --allow-missing-weights; window: confirm)"
    )
    err.missing = tuple(missing)
    return err


def missing_weights_warning(ref: str, missing: tuple[str, ...]) -> str:
    """The ``warning: …`` note of a model loaded with weights missing (every capture repeats it).

    Only a missing task head: its predictions are random, the maps are not. Anything else (loaded
    with ``allow_missing_weights``): the note holds :data:`~analysis.result.RANDOM_WEIGHTS`, and
    every figure's title says the maps are not reproducible.
    """
    if head_only(missing):
        return (f"warning: {ref} has no weights for its task head ({_shown(missing)}); they were initialised at "
                "random, so its predictions are meaningless (the attention maps are not affected)")
    one = len(missing) == 1
    return (f"warning: {_count(len(missing), 'weight')} of {ref} {'is' if one else 'are'} missing from its checkpoint "
            f"({_shown(missing)}) and {'was' if one else 'were'} {RANDOM_WEIGHTS}, so its attention maps and "
            "predictions change from run to run")


_PROPHETNET = ("ProphetNet predicts n-gram streams: its decoder attends with a main stream and n predicting "
               "streams at once, so its attention is not one query × key map over the tokens")
_LONGFORMER = ("it attends within a sliding window (plus a few global tokens) and returns each token's weights "
               "over its window only, not a map over the whole sentence")
_STATE_SPACE = "it is a state-space model with no attention at all, so there are no attention maps to show"
_RECURRENT = "it is a recurrent model with no attention at all, so there are no attention maps to show"
_HYBRID = ("it mixes attention layers with state-space, recurrent or convolution layers, so only some of its "
           "layers have attention maps")
_APPROXIMATE = "it approximates attention (landmarks, hashing or low rank) and never forms the query × key map"
#: model types whose attention is not one query × key map per layer: the real reason for each
NOT_QUERY_KEY: dict[str, str] = {
    "funnel": ("Funnel Transformer pools the sequence between its blocks, so its later layers attend over fewer "
               "positions than there are tokens"),
    "prophetnet": _PROPHETNET,
    "xlm-prophetnet": _PROPHETNET,
    "longformer": _LONGFORMER,
    "led": _LONGFORMER,
    "reformer": ("Reformer attends within hashed buckets (LSH) and fixed-size chunks, so no layer has one map over "
                 "all the tokens"),
    "mamba": _STATE_SPACE, "mamba2": _STATE_SPACE, "falcon_mamba": _STATE_SPACE,
    "rwkv": _RECURRENT, "xlstm": _RECURRENT,
    "fnet": "FNet mixes tokens with Fourier transforms instead of attention, so there are no attention maps to show",
    "nystromformer": _APPROXIMATE, "yoso": _APPROXIMATE, "mra": _APPROXIMATE,
    "jamba": _HYBRID, "zamba": _HYBRID, "zamba2": _HYBRID, "bamba": _HYBRID, "falcon_h1": _HYBRID,
    "nemotron_h": _HYBRID, "granitemoehybrid": _HYBRID, "lfm2": _HYBRID, "lfm2_moe": _HYBRID,
    "qwen3_next": _HYBRID, "recurrent_gemma": _HYBRID, "olmo_hybrid": _HYBRID, "bailing_hybrid": _HYBRID,
}
_BLOCK_SPARSE = ("BigBird's block-sparse attention attends to blocks of neighbouring, global and random tokens and "
                 "returns no map over the whole sentence (set \"attention_type\": \"original_full\" in its "
                 "config.json to see full attention)")


def check_attention(ref: str, config) -> None:
    """Refuse, from the config, an architecture whose attention is not one query × key map per layer
    over the tokens, naming the real reason (:data:`NOT_QUERY_KEY`; BigBird with block-sparse
    attention). Sliding-window decoders (Mistral, Gemma 2) pass: their maps are full matrices with
    the window's mask.

    Raises
    ------
    NoAttentionError
    """
    mt = str(getattr(config, "model_type", "") or "")
    reason = NOT_QUERY_KEY.get(mt)
    if reason is None and mt in ("big_bird", "bigbird_pegasus") and getattr(config, "attention_type", "") == "block_sparse":
        reason = _BLOCK_SPARSE
    if reason is None and _cfg(config, "num_attention_heads", "n_head", "num_heads", "n_heads",
                               "encoder_attention_heads") is None:
        reason = "its config names no attention heads, so it has no attention maps to show"
    if reason is not None:
        raise NoAttentionError(
            f"Headmap cannot show {ref} ({mt or 'unknown type'}): {reason}; it shows models whose every layer's "
            "attention is one query × key map over the tokens (BERT, GPT-2, Llama, BART, T5, Marian, …)"
        )


def _device_label(model) -> str:
    placed = getattr(model, "hf_device_map", None)
    if placed:
        return "auto (" + ", ".join(sorted({str(v) for v in placed.values()})) + ")"
    return str(next(model.parameters()).device)


def model_summary(ref: str, kind: Kind, model, config, tokenizer, folder: Path) -> ModelSummary:
    n_params = sum(p.numel() for p in model.parameters())
    try:
        mem = int(model.get_memory_footprint())
    except Exception:
        mem = sum(p.numel() * p.element_size() for p in model.parameters())
    head = _head_kind(model, kind)
    return ModelSummary(
        reference=ref,
        kind=kind,
        architecture=type(model).__name__,
        model_type=getattr(config, "model_type", "?"),
        stacks=stack_infos(config, kind),
        n_params=int(n_params),
        dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
        device=_device_label(model),
        memory_bytes=mem,
        max_positions=max_positions(config, tokenizer),
        has_lm_head=head in ("lm", "masked_lm"),
        head_kind=head,
        source_path=str(folder),
        token_style=_token_style(tokenizer),
    )


def _token_style(tokenizer) -> str:
    from .tokens import style_name, tokenizer_style

    try:
        return style_name(tokenizer_style(tokenizer))
    except Exception:  # a tokenizer we cannot inspect: the legend stays general
        return ""


def bundled_choices() -> list[tuple[str, str]]:
    """(reference, description) for the model panel."""
    return [(f"bundled:{n}", b.description) for n, b in BUNDLED.items()]
