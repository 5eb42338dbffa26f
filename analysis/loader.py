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
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bundled import BUNDLED, bundled_path, sha256_file
from .consent import CodeConsent, check_remote_code
from .errors import (
    ConsentRequiredError,
    HeadmapError,
    InputError,
    ModelLoadError,
    NoAttentionError,
    RemoteCodeError,
)
from .result import Kind
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
def cache_dir() -> Path:
    """Headmap's own cache (dequantized GGUF models). ``HEADMAP_CACHE`` overrides it."""
    env = os.environ.get("HEADMAP_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "headmap"


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


def dequantize_gguf(gguf: Path, bundled: str | None, task: TaskState | None = None) -> Path:
    """Dequantize a GGUF file once into a ``save_pretrained``-style cache folder; reuse it after.

    ``task`` reports stage ``dequantize`` and is checked for cancellation between the steps.
    """
    task = as_task(task)
    target = _gguf_cache_folder(gguf, bundled)
    if (target / "headmap-cache.json").exists():
        return target
    task.step("dequantize", None, f"dequantizing {gguf.name} (once; reused next time)…")
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
    task.step("dequantize", 0.9, "writing the dequantized cache…")
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        cfg = model.config
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        if not getattr(cfg, "architectures", None):
            cfg.architectures = [type(model).__name__]
        cfg.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))
        tok.save_pretrained(tmp)
        (tmp / "headmap-cache.json").write_text(json.dumps({"source": str(gguf)}))
        if (target / "headmap-cache.json").exists():
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first: keep its copy
            return target
        if target.exists():
            shutil.rmtree(target)  # an incomplete leftover without the marker
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "headmap-cache.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # lost a race to an identical copy
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelLoadError(f"could not write the dequantized cache to {target} ({exc}); free some disk space or set HEADMAP_CACHE") from exc
    return target


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

    Raises
    ------
    HeadmapError subclasses with one sentence saying what to do.
    """
    task = as_task(task)
    task.report("resolve", 0.0, f"finding {ref}…")
    folder = _checkpoint_folder(ref, allow_pickle, task)
    # consent covers one checkpoint and its code as hashed now (analysis.consent)
    trust_remote_code = check_remote_code(ref, folder, _needs_remote_code(folder), trust_remote_code)
    dev = _resolve_device(device)
    task.report("load", 0.1, "reading the config…")
    config = _read_config(ref, folder, trust_remote_code)
    kind = detect_kind(config)
    tdtype = _torch_dtype(dtype, dev, config)
    notes: list[str] = []
    if memory_check:
        _, warn = check_memory(config, kind, tdtype, dev, trust_remote_code)
        if warn:
            notes.append(warn)
    task.step("load", 0.3, "loading the tokenizer…")
    tokenizer = _read_tokenizer(ref, folder, trust_remote_code)
    task.step("load", 0.5, "loading the weights…")
    spread = dev == "cuda" and device == "auto"  # accelerate places the layers itself
    model = _read_weights(ref, folder, kind, config, tdtype, trust_remote_code, device_map=spread)
    task.check()
    if not spread and dev != "cpu":
        model.to(dev)
    model.eval()
    impl = getattr(model.config, "_attn_implementation", "eager")
    if impl not in ("eager", None):
        raise NoAttentionError(f"{type(model).__name__} runs with '{impl}' attention, which returns no attention maps; it cannot be shown")
    summary = model_summary(ref, kind, model, config, tokenizer, folder)
    task.report("ready", 1.0, f"loaded {ref}")
    return LoadedModel(ref, kind, model, tokenizer, config, summary, folder, notes)


def _checkpoint_folder(ref: str, allow_pickle: bool, task: TaskState) -> Path:
    """The checked ``save_pretrained`` folder of ``ref`` (downloaded or dequantized when needed)."""
    res = resolve_reference(ref, task)
    task.check()
    folder = res.folder
    if res.gguf_file:
        folder = dequantize_gguf(res.folder / res.gguf_file, res.bundled, task)
    check_folder(folder, allow_pickle)  # before importing transformers: bad folders fail fast
    return folder


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


def _read_weights(ref: str, folder: Path, kind: Kind, config, tdtype, trust_remote_code: bool, *, device_map: bool):
    """The model with its head, eager attention, in ``tdtype`` (``device_map="auto"`` if asked)."""
    cls = _auto_class(kind, config)
    kwargs: dict[str, Any] = {
        "attn_implementation": "eager",
        "dtype": tdtype,
        "trust_remote_code": trust_remote_code,
    }
    if not list(folder.glob("*.safetensors")):
        kwargs["use_safetensors"] = False
    if device_map:
        kwargs["device_map"] = "auto"
    try:
        return cls.from_pretrained(str(folder), **kwargs)
    except HeadmapError:
        raise
    except Exception as exc:
        msg = str(exc)
        if "trust_remote_code" in msg:
            raise _remote_code_error(ref) from exc
        if any(s in msg.lower() for s in ("deserializ", "header", "safetensor", "invalid", "truncat", "eof", "corrupt")):
            raise ModelLoadError(f"the weights of {ref} are damaged or incomplete ({msg[:160]}); download or copy the model again") from exc
        raise ModelLoadError(f"{ref} could not be loaded ({type(exc).__name__}: {msg[:200]}); check that it is a transformers checkpoint") from exc


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
