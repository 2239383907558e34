"""Vocabulary trimming (export/vocabulary.py): tokenizer and embedding remapped together.

A tiny Unigram tokenizer and BERT built here show the contract (same pieces, same attention, the
refusals); the shipped keep list is checked on every document of the data against the real
multilingual-e5-small tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import data_dir

pytest.importorskip("torch")
pytest.importorskip("transformers")

from keyatten_lite_export import ExportError  # noqa: E402
from keyatten_lite_export.vocabulary import (  # noqa: E402
    format_keep_list,
    read_keep_list,
    trim_model_dir,
    trim_unigram_tokenizer,
)

CORPUS = [
    "graph neural networks learn representations of nodes",
    "keyword extraction ranks words by the attention they receive",
    "深度学习模型在自然语言处理任务中取得了显著进展",
    "北京是中国的首都，上海是最大的城市。",
    "attention attends to every token",
]
SEEN = CORPUS[:2] + CORPUS[3:]  # the text the keep list is chosen from (CORPUS[2] is left out)


def _unigram_tokenizer() -> dict:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>", shrinking_factor=0.9
    )
    tokenizer.train_from_iterator(CORPUS * 5, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return json.loads(tokenizer.to_str())


def _load(document: dict):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps(document))


def _keep_for(document: dict, texts) -> list[int]:
    full = _load(document)
    vocab = document["model"]["vocab"]
    lowest = min(range(len(vocab)), key=lambda i: vocab[i][1])
    ids = {0, 1, 2, 3, lowest}
    for text in texts:
        ids.update(full.encode(text).ids)
    return sorted(ids)


@pytest.fixture(scope="module")
def unigram() -> dict:
    return _unigram_tokenizer()


def test_kept_text_tokenizes_the_same_with_ids_remapped(unigram):
    keep = _keep_for(unigram, SEEN)
    assert len(keep) < len(unigram["model"]["vocab"])  # something was really dropped
    full, trimmed = _load(unigram), _load(trim_unigram_tokenizer(unigram, keep))
    new_id = {old: new for new, old in enumerate(keep)}
    for text in SEEN:
        a, b = full.encode(text), trimmed.encode(text)
        assert a.tokens == b.tokens and a.offsets == b.offsets
        assert [new_id[i] for i in a.ids] == b.ids
    # The post-processor's special ids follow the remapping.
    assert trimmed.encode("graph").ids[0] == new_id[0] and trimmed.encode("graph").ids[-1] == new_id[2]


def test_text_outside_the_keep_list_still_splits_into_kept_pieces(unigram):
    keep = _keep_for(unigram, SEEN)
    trimmed = _load(trim_unigram_tokenizer(unigram, keep))
    encoding = trimmed.encode(CORPUS[2])
    assert all(0 <= i < len(keep) for i in encoding.ids)


def test_the_lowest_piece_and_the_specials_must_be_kept(unigram):
    keep = _keep_for(unigram, SEEN)
    vocab = unigram["model"]["vocab"]
    lowest = min(range(len(vocab)), key=lambda i: vocab[i][1])
    with pytest.raises(ExportError, match="lowest-scored"):
        trim_unigram_tokenizer(unigram, [i for i in keep if i != lowest])
    with pytest.raises(ExportError, match="special"):
        trim_unigram_tokenizer(unigram, [i for i in keep if i != 3])
    with pytest.raises(ExportError, match="vocabulary has"):
        trim_unigram_tokenizer(unigram, keep + [len(vocab) + 5])


def test_keep_list_round_trip_and_refusals(tmp_path):
    ids = [0, 1, 2, 3, 7, 9, 10, 11, 250001]
    path = tmp_path / "x.keep"
    path.write_text(format_keep_list(ids, ["a comment"]), encoding="utf-8")
    assert "7\n9-11\n" in path.read_text(encoding="utf-8")
    assert read_keep_list(path) == ids
    for bad in ("3-1\n", "1-2\n2-4\n", "a-b\n", "# only a comment\n"):
        path.write_text(bad, encoding="utf-8")
        with pytest.raises(ExportError):
            read_keep_list(path)


def test_trimmed_model_computes_the_same_attention(unigram, tmp_path):
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    vocab_size = len(unigram["model"]["vocab"]) + 3  # e5's embedding also has unused rows past the pieces
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=1, attn_implementation="eager",
    )
    model = BertModel(config).eval()
    directory = tmp_path / "model"
    directory.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    config.save_pretrained(directory)
    (directory / "tokenizer.json").write_text(json.dumps(unigram), encoding="utf-8")

    keep = _keep_for(unigram, SEEN)
    done = trim_model_dir(directory, keep)
    assert done["embedding_rows_before"] == vocab_size and done["embedding_rows_after"] == len(keep)
    trimmed_model = BertModel.from_pretrained(directory, attn_implementation="eager").eval()
    assert trimmed_model.config.vocab_size == len(keep)
    assert trimmed_model.config.pad_token_id == keep.index(1)
    full_tok, trim_tok = _load(unigram), _load(json.loads((directory / "tokenizer.json").read_text(encoding="utf-8")))
    with torch.no_grad():
        for text in SEEN:
            a = torch.tensor([full_tok.encode(text).ids])
            b = torch.tensor([trim_tok.encode(text).ids])
            out_a = model(a, output_attentions=True)
            out_b = trimmed_model(b, output_attentions=True)
            assert max(float((x - y).abs().max()) for x, y in zip(out_a.attentions, out_b.attentions)) <= 1e-6
            assert float((out_a.last_hidden_state - out_b.last_hidden_state).abs().max()) <= 1e-5


@pytest.mark.slow
def test_shipped_keep_list_gives_the_same_pieces_on_every_document():
    """The default Chinese bundle's keep list against the full e5 tokenizer, every data document."""
    from keyatten_lite_export import sources

    root = data_dir()
    files = sorted(Path(root).glob("*/*.jsonl")) if Path(root).is_dir() else []
    if not files:
        pytest.skip(f"no evaluation data in {root}")
    recipe = sources.load_recipe("e5-small-zh")
    spec = recipe["source"]["tokenizer"]
    package = {p["import_name"]: p for p in recipe["source"]["packages"]}[spec["package"]]
    try:
        full_path = sources.package_dir(package, None) / spec["path"]
    except Exception as exc:  # the source package is not installed
        pytest.skip(f"source tokenizer not available: {exc}")
    document = json.loads(full_path.read_text(encoding="utf-8"))
    keep_path = sources.keep_list_path(recipe["vocabulary"]["keep"])
    keep = read_keep_list(keep_path)
    full, trimmed = _load(document), _load(trim_unigram_tokenizer(document, keep))
    keep_array = np.asarray(keep)
    checked = 0
    for path in files:
        texts = [json.loads(line)["text"] for line in path.open(encoding="utf-8")]
        for a, b in zip(full.encode_batch(texts), trimmed.encode_batch(texts)):
            assert keep_array[b.ids].tolist() == a.ids and a.offsets == b.offsets, f"{path.name}: pieces differ"
            checked += 1
    assert checked > 5000
    assert len(keep) < len(document["model"]["vocab"]) // 3
