"""Tiny random checkpoints on disk, written exactly like a user's ``save_pretrained`` folder.

Every fixture is a real transformers architecture with tiny dimensions (hidden 32, 2 layers, 4 heads,
FFN 64, 64 positions) and a tokenizer *trained here* with the ``tokenizers`` library on
:data:`CORPUS`, in the same family as the real model's tokenizer:

==============  ===========================  =====================================
arch            model class                  tokenizer
==============  ===========================  =====================================
bert            BertModel                    WordPiece ``##``, ``[CLS] $A [SEP]``
bert-mlm        BertForMaskedLM              (same)
bert-cls        BertForSequenceClassification (same), 3 labels
distilbert      DistilBertModel              (same)
roberta         RobertaModel                 byte-level BPE ``Ġ``, ``<s> $A </s>``
gpt2            GPT2LMHeadModel              byte-level BPE, no specials added
llama           LlamaForCausalLM             byte-level BPE, ``<s>`` BOS (Llama-3 style)
bart            BartForConditionalGeneration byte-level BPE, ``<s> $A </s>``
t5              T5ForConditionalGeneration   Unigram + Metaspace ``▁``, ``$A </s>``
marian          MarianMTModel                Unigram + Metaspace ``▁``, ``$A </s>``
==============  ===========================  =====================================

No network is used: nothing is downloaded, everything is built from seeds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# --------------------------------------------------------------------------------------------
# the training corpus
# --------------------------------------------------------------------------------------------
_EN = [
    "I like this course",
    "I like this course very much",
    "We are learning about attention in transformers",
    "The students are reading and writing and thinking",
    "She is teaching the course and he is learning",
    "The cat sat on the mat",
    "The model looks at every token in the sentence",
    "Attention heads show which words matter",
    "I am learning and teaching and reading",
    "This is a long sentence about language models and their heads",
    "Hello world, how are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Numbers like 1, 2, 3 and 42 appear too.",
    "Transformers translate sentences from English to French and Korean",
    "Learning is fun when teaching is good",
    "My teacher likes the lecture",
]
_KO = [
    "나는 이 강의를 좋아한다",
    "나는 이 강의를 정말 좋아한다",
    "우리는 트랜스포머의 어텐션을 배운다",
    "고양이가 매트 위에 앉았다",
    "학생들은 책을 읽고 글을 쓴다",
    "이 문장은 한국어 문장이다",
    "선생님은 강의를 좋아한다",
]
_FR = [
    "J'aime ce cours",
    "J'aime beaucoup ce cours",
    "Nous apprenons l'attention dans les transformeurs",
    "Le chat est assis sur le tapis",
    "Les étudiants lisent et écrivent",
    "Le professeur aime la leçon",
    "Ceci est une phrase en français",
]
#: sentences the tokenizers are trained on (English, Korean, French)
CORPUS: tuple[str, ...] = tuple(_EN + _KO + _FR)

#: every architecture :func:`build_tiny` knows
ARCHS = ("bert", "bert-mlm", "bert-cls", "distilbert", "roberta", "gpt2", "llama", "bart", "t5", "marian")
#: the base fixture set (one per tokenizer/model family); variants are built on demand
BASE_ARCHS = ("bert", "roberta", "distilbert", "gpt2", "llama", "bart", "t5", "marian")
KIND = {
    "bert": "encoder", "bert-mlm": "encoder", "bert-cls": "encoder", "distilbert": "encoder",
    "roberta": "encoder", "gpt2": "decoder", "llama": "decoder",
    "bart": "seq2seq", "t5": "seq2seq", "marian": "seq2seq",
}
ENCODERS = tuple(a for a in BASE_ARCHS if KIND[a] == "encoder")
DECODERS = tuple(a for a in BASE_ARCHS if KIND[a] == "decoder")
SEQ2SEQ = tuple(a for a in BASE_ARCHS if KIND[a] == "seq2seq")

HIDDEN, LAYERS, HEADS, FFN, POSITIONS = 32, 2, 4, 64, 64
VOCAB = 400
SEED = 1234
CLS_LABELS = {0: "negative", 1: "neutral", 2: "positive"}


# --------------------------------------------------------------------------------------------
# tokenizers
# --------------------------------------------------------------------------------------------
def _corpus_iter():
    # a few passes so the trainers see enough pair counts to learn merges
    for _ in range(3):
        yield from CORPUS


def _wordpiece():
    """BERT-style WordPiece: lowercase, BertPreTokenizer, ``##`` continuation, [CLS] $A [SEP]."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=False, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=specials,
                                         continuing_subword_prefix="##", show_progress=False)
    tok.train_from_iterator(_corpus_iter(), trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    names = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    return tok, names


def _bytelevel(specials: list[str], template: str | None):
    """Byte-level BPE (``Ġ``): any text tokenizes, since all 256 byte symbols are in the vocab.

    ``template``: ``"roberta"`` (``<s> $A </s>``), ``"bos"`` (``<s> $A``) or None (GPT-2: nothing).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus_iter(), trainer)
    if template == "roberta":
        bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
        tok.post_processor = processors.RobertaProcessing(("</s>", eos), ("<s>", bos), trim_offsets=True,
                                                          add_prefix_space=False)
    elif template == "bos":
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", bos)]),
        ])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _unigram():
    """SentencePiece-style Unigram with Metaspace ``▁`` and ``$A </s>``; <pad>=0, </s>=1, <unk>=2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<pad>", "</s>", "<unk>"]
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=VOCAB, special_tokens=specials, unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(_corpus_iter(), trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A $B </s>", special_tokens=[("</s>", eos)]
    )
    return tok


def build_tokenizer(family: str):
    """A ``PreTrainedTokenizerFast`` of one family: ``wordpiece``, ``roberta``, ``gpt2``, ``llama``,
    ``unigram``. The result has ``model_max_length`` = :data:`POSITIONS`."""
    from transformers import PreTrainedTokenizerFast

    if family == "wordpiece":
        tok, names = _wordpiece()
    elif family == "roberta":
        tok = _bytelevel(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "roberta")
        names = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                     cls_token="<s>", sep_token="</s>", mask_token="<mask>")
    elif family == "gpt2":
        tok = _bytelevel(["<|endoftext|>"], None)
        names = dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    elif family == "llama":
        tok = _bytelevel(["<unk>", "<s>", "</s>"], "bos")
        names = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    elif family == "unigram":
        tok = _unigram()
        names = dict(pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    else:
        raise ValueError(f"unknown tokenizer family {family!r}")
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=POSITIONS, **names)


def build_byte_fallback_tokenizer():
    """A Llama-2-style tokenizer: a ``▁`` BPE trained on the ASCII sentences only, with the 256
    ``<0xNN>`` byte tokens in its vocabulary and ``byte_fallback`` on, so Hangul and emoji become
    byte tokens like ``<0xEC>``. Decoder: Replace ``▁`` → space, ByteFallback, Fuse, Strip."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")  # keep ▁ on the word
    tok.decoder = decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0),
    ])
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=specials, show_progress=False)
    tok.train_from_iterator([s for s in _corpus_iter() if s.isascii()], trainer)
    # the byte tokens are ordinary vocabulary entries (as in Llama-2), not added/special tokens
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    spec["model"]["byte_fallback"] = True
    tok = Tokenizer.from_str(json.dumps(spec))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=POSITIONS)


_FAMILY = {
    "bert": "wordpiece", "bert-mlm": "wordpiece", "bert-cls": "wordpiece", "distilbert": "wordpiece",
    "roberta": "roberta", "bart": "roberta", "gpt2": "gpt2", "llama": "llama", "t5": "unigram", "marian": "unigram",
}


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------
def _model(arch: str, tok):
    import transformers as tf

    v = len(tok)
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in
           (("pad", tok.pad_token), ("bos", tok.bos_token), ("eos", tok.eos_token)) if t is not None}
    if arch in ("bert", "bert-mlm", "bert-cls"):
        cfg = tf.BertConfig(vocab_size=v, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                            intermediate_size=FFN, max_position_embeddings=POSITIONS, pad_token_id=ids["pad"])
        if arch == "bert-cls":
            cfg.num_labels = len(CLS_LABELS)
            cfg.id2label = dict(CLS_LABELS)
            cfg.label2id = {v_: k for k, v_ in CLS_LABELS.items()}
        cls = {"bert": tf.BertModel, "bert-mlm": tf.BertForMaskedLM, "bert-cls": tf.BertForSequenceClassification}[arch]
    elif arch == "distilbert":
        cfg = tf.DistilBertConfig(vocab_size=v, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN,
                                  max_position_embeddings=POSITIONS, pad_token_id=ids["pad"])
        cls = tf.DistilBertModel
    elif arch == "roberta":
        # RoBERTa positions start after padding_idx, so the table needs 2 more rows than tokens
        cfg = tf.RobertaConfig(vocab_size=v, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                               intermediate_size=FFN, max_position_embeddings=POSITIONS + 2, type_vocab_size=1,
                               pad_token_id=ids["pad"], bos_token_id=ids["bos"], eos_token_id=ids["eos"])
        cls = tf.RobertaModel
    elif arch == "gpt2":
        cfg = tf.GPT2Config(vocab_size=v, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=FFN,
                            n_positions=POSITIONS, bos_token_id=ids["bos"], eos_token_id=ids["eos"])
        cls = tf.GPT2LMHeadModel
    elif arch == "llama":
        cfg = tf.LlamaConfig(vocab_size=v, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                             num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=POSITIONS,
                             bos_token_id=ids["bos"], eos_token_id=ids["eos"], tie_word_embeddings=True)
        cls = tf.LlamaForCausalLM
    elif arch == "bart":
        cfg = tf.BartConfig(vocab_size=v, d_model=HIDDEN, encoder_layers=LAYERS, decoder_layers=LAYERS,
                            encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FFN,
                            decoder_ffn_dim=FFN, max_position_embeddings=POSITIONS, pad_token_id=ids["pad"],
                            bos_token_id=ids["bos"], eos_token_id=ids["eos"], decoder_start_token_id=ids["eos"],
                            forced_eos_token_id=ids["eos"])
        cls = tf.BartForConditionalGeneration
    elif arch == "t5":
        cfg = tf.T5Config(vocab_size=v, d_model=HIDDEN, d_kv=HIDDEN // HEADS, d_ff=FFN, num_layers=LAYERS,
                          num_decoder_layers=LAYERS, num_heads=HEADS, relative_attention_num_buckets=8,
                          relative_attention_max_distance=32, pad_token_id=ids["pad"], eos_token_id=ids["eos"],
                          decoder_start_token_id=ids["pad"])
        cls = tf.T5ForConditionalGeneration
    elif arch == "marian":
        cfg = tf.MarianConfig(vocab_size=v, decoder_vocab_size=v, d_model=HIDDEN, encoder_layers=LAYERS,
                              decoder_layers=LAYERS, encoder_attention_heads=HEADS, decoder_attention_heads=HEADS,
                              encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, max_position_embeddings=POSITIONS,
                              pad_token_id=ids["pad"], eos_token_id=ids["eos"], decoder_start_token_id=ids["pad"],
                              forced_eos_token_id=ids["eos"], scale_embedding=True)
        cls = tf.MarianMTModel
    else:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    return cls(cfg)


def build_tiny(arch: str, folder: Path) -> Path:
    """Write a tiny random checkpoint of ``arch`` (see :data:`ARCHS`) into ``folder``; return it.

    The folder looks like any ``save_pretrained`` output: ``config.json``, ``model.safetensors``,
    ``generation_config.json`` (LM heads), ``tokenizer.json`` and ``tokenizer_config.json``.
    """
    import torch

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(_FAMILY[arch])
    torch.manual_seed(SEED)
    model = _model(arch, tok)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    # transformers 5 writes its alias "TokenizersBackend"; record the portable name instead
    cfg_path = folder / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return folder


# --------------------------------------------------------------------------------------------
# broken folders for the bad-input tests
# --------------------------------------------------------------------------------------------
REMOTE_CODE_MARKER = "REMOTE_CODE_RAN"
BROKEN_KINDS = ("no-config", "no-tokenizer", "no-weights", "truncated-weights", "garbage-weights", "config-not-json",
                "unknown-model-type", "remote-code", "pickle-only")


def build_broken(kind: str, folder: Path, source: Path | None = None) -> Path:
    """Write a broken checkpoint folder of ``kind`` (see :data:`BROKEN_KINDS`) into ``folder``.

    ``source``: a good tiny checkpoint to start from (built as ``bert`` when not given).
    """
    folder = Path(folder)
    if kind not in BROKEN_KINDS:
        raise ValueError(f"unknown broken kind {kind!r}; choose one of {BROKEN_KINDS}")
    if source is None:
        source = build_tiny("bert", folder.with_name(folder.name + "-source"))
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(source, folder)
    if kind == "no-config":
        (folder / "config.json").unlink()
    elif kind == "no-tokenizer":
        for p in folder.iterdir():
            if p.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
                p.unlink()
    elif kind == "no-weights":
        (folder / "model.safetensors").unlink()
    elif kind == "config-not-json":
        (folder / "config.json").write_text("{not json", encoding="utf-8")
    elif kind == "unknown-model-type":
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        cfg["model_type"] = "no-such-architecture"
        (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    elif kind == "truncated-weights":
        w = folder / "model.safetensors"
        data = w.read_bytes()
        w.write_bytes(data[: len(data) // 3])
    elif kind == "garbage-weights":
        (folder / "model.safetensors").write_bytes(b"\x00\x01garbage, not safetensors\xff" * 64)
    elif kind == "remote-code":
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        cfg["model_type"] = "headmap-custom-arch"
        cfg["architectures"] = ["HeadmapCustomModel"]
        cfg["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig",
                           "AutoModel": "modeling_custom.HeadmapCustomModel"}
        (folder / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        # the repository's own code: a BERT under another name. It leaves a marker file behind, so a
        # test can tell whether it ran (it must not, unless trust_remote_code is on)
        marker = folder / REMOTE_CODE_MARKER
        (folder / "configuration_custom.py").write_text(
            f"open({str(marker)!r}, 'w').write('ran')\n"
            "from transformers import BertConfig\n\n\n"
            "class CustomConfig(BertConfig):\n"
            "    model_type = 'headmap-custom-arch'\n",
            encoding="utf-8",
        )
        (folder / "modeling_custom.py").write_text(
            "from transformers import BertModel\n\n"
            "from .configuration_custom import CustomConfig\n\n\n"
            "class HeadmapCustomModel(BertModel):\n"
            "    config_class = CustomConfig\n",
            encoding="utf-8",
        )
    elif kind == "pickle-only":
        import torch
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
        (folder / "model.safetensors").unlink()
        torch.save(state, folder / "pytorch_model.bin")
    return folder


# --------------------------------------------------------------------------------------------
# a tiny GGUF file (the dequantized-cache tests)
# --------------------------------------------------------------------------------------------
_GGUF_LLAMA_NAMES = {
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight", "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def _llama_cpp_permute(w, n_head: int):
    """llama.cpp's row order of a query/key projection (transformers' GGUF reader undoes it)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def build_tiny_gguf(path: Path, llama: Path) -> Path:
    """Write the tiny ``llama`` checkpoint folder (:func:`build_tiny`) as an F32 GGUF file at ``path``,
    the way llama.cpp's converter lays it out (tensor names, permuted q/k, a ``gpt2`` BPE tokenizer
    with ``<s>`` added first). Dequantized, it is the same model: same weights, same token ids."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    cfg = json.loads((llama / "config.json").read_text(encoding="utf-8"))
    spec = json.loads((llama / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = dict(spec["model"]["vocab"])
    for added in spec["added_tokens"]:
        vocab[added["content"]] = added["id"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]]
    specials = {a["content"] for a in spec["added_tokens"] if a.get("special")}
    hidden, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("headmap tiny llama")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(float((cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(hidden // heads)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in specials else 1 for t in tokens])  # 3: control, 1: normal
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<s>"])
    w.add_eos_token_id(vocab["</s>"])
    w.add_unk_token_id(vocab["<unk>"])
    w.add_add_bos_token(True)
    for name, arr in load_file(str(llama / "model.safetensors")).items():
        if name == "lm_head.weight":
            continue  # tied to the embeddings
        if name == "model.embed_tokens.weight":
            out = "token_embd.weight"
        elif name == "model.norm.weight":
            out = "output_norm.weight"
        else:
            _, _, layer, rest = name.split(".", 3)
            out = f"blk.{layer}.{_GGUF_LLAMA_NAMES[rest]}"
            if rest.startswith(("self_attn.q_proj", "self_attn.k_proj")):
                arr = _llama_cpp_permute(arr, heads if "q_proj" in rest else kv)
        w.add_tensor(out, np.ascontiguousarray(arr, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
