"""Tiny random Hugging Face models for export tests, built locally (no downloads).

Each builder writes a directory that ``AutoConfig``/``AutoModel``/``AutoTokenizer(use_fast=True)`` load:
config.json, model.safetensors, tokenizer.json, tokenizer_config.json. Weights are random but seeded,
with a large init range so attention is peaked and layers really differ. Needs torch, transformers
and tokenizers (build time only; the runtime never imports this module).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = [
    "TEXTS_A",
    "TEXTS_B",
    "DECODER_CORPUS",
    "make_tiny_bert",
    "make_tiny_qwen3",
    "make_tiny_qwen2",
    "make_tiny_llama",
]

TEXTS_A = [
    "graph neural networks learn representations of nodes",
    "深度学习模型在自然语言处理任务中取得了显著进展",
    "keyword",
    "the transformer encoder attends over every token pair and padding gets zero probability",
]
TEXTS_B = ["量子计算利用叠加和纠缠来加速求解 quantum", "beijing is the capital of china"]

# Chinese and English, so the byte-level BPE learns some whole characters and words.
DECODER_CORPUS = TEXTS_A + TEXTS_B + [
    "keyword extraction ranks words by the attention they receive",
    "基于注意力机制的关键词抽取方法无需训练数据。",
    "北京是中国的首都，上海是最大的城市。",
    "电池储能系统的热管理对安全性至关重要",
    "Decoder-only models read text from left to right; each token sees only earlier tokens.",
    "核心关键词、关键实体、主题：大语言模型的注意力",
]


def make_tiny_bert(directory: Path, *, layers: int = 3, seed: int = 0) -> Path:
    """A tiny BERT whose tokenizer.json carries sentence-transformers-style fixed padding (128)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel

    directory.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = TEXTS_A + TEXTS_B + ["keyword extraction ranks words by the attention they receive"]
    tokenizer.train_from_iterator(corpus * 3, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.enable_padding(length=128, pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(max_length=128)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "BertTokenizerFast",
                "do_lower_case": True,
                "model_max_length": 64,
                "cls_token": "[CLS]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "unk_token": "[UNK]",
                "mask_token": "[MASK]",
            }
        )
    )
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.5,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(directory)
    return directory


# ---------------------------------------------------------------------------------------------
# Decoders (Qwen3, Qwen2, Llama): grouped-query attention, byte-level BPE, no BOS


_DECODER_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _byte_level_tokenizer(append_eos: str | None):
    """A small byte-level BPE like Qwen's; ``append_eos`` adds that token after every text.

    Qwen2 LMs add nothing; Qwen3-Embedding appends <|endoftext|> (its last token is then the EOS).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=_DECODER_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(DECODER_CORPUS * 3, trainer)
    if append_eos is None:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    else:
        eos_id = tokenizer.token_to_id(append_eos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"$A {append_eos}", pair=f"$A $B {append_eos}", special_tokens=[(append_eos, eos_id)]
        )
    return tokenizer


def _write_decoder_tokenizer(directory: Path, *, append_eos: str | None, eos: str, pad: str | None, padding_side: str):
    tokenizer = _byte_level_tokenizer(append_eos)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 256,
        "bos_token": None,
        "eos_token": eos,
        "padding_side": padding_side,
        "clean_up_tokenization_spaces": False,
    }
    if pad is not None:
        config["pad_token"] = pad
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return tokenizer


def _save_decoder(model_class, config, directory: Path, *, seed: int) -> None:
    """Random weights of the full ``*ForCausalLM`` (keys prefixed 'model.', as LM checkpoints are)."""
    import torch

    torch.manual_seed(seed)
    model_class(config).save_pretrained(directory)


def _decoder_kwargs(vocab_size: int, layers: int, eos_id: int, pad_id: int | None) -> dict:
    return {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "initializer_range": 0.2,
        "rope_theta": 10000.0,
        "bos_token_id": None,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "tie_word_embeddings": True,
    }


def make_tiny_qwen3(directory: Path, *, layers: int = 6, seed: int = 0) -> Path:
    """Qwen3-Embedding-like: bare Qwen3Model weights, architectures ["Qwen3ForCausalLM"], head_dim 16,
    4 query / 2 key-value heads, EOS appended by the tokenizer, pad = EOS, left padding."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _write_decoder_tokenizer(
        directory, append_eos="<|endoftext|>", eos="<|endoftext|>", pad="<|endoftext|>", padding_side="left"
    )
    eos_id = tokenizer.token_to_id("<|endoftext|>")
    config = Qwen3Config(head_dim=16, **_decoder_kwargs(tokenizer.get_vocab_size(), layers, eos_id, eos_id))
    config.architectures = ["Qwen3ForCausalLM"]
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    with torch.no_grad():
        # q/k RMSNorm weights start at 1, which flattens attention; random gains make it peaked.
        for layer in model.model.layers:
            layer.self_attn.q_norm.weight.uniform_(1.0, 3.0)
            layer.self_attn.k_norm.weight.uniform_(1.0, 3.0)
    # Embedding repos hold the bare model (keys without 'model.'); save_pretrained then records
    # "Qwen3Model", so put back the CausalLM name that keyatten's causal detection looks for (§2.4).
    model.model.save_pretrained(directory)
    path = directory / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["architectures"] = ["Qwen3ForCausalLM"]
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return directory


def make_tiny_qwen2(directory: Path, *, layers: int = 6, seed: int = 1) -> Path:
    """Qwen2-LM-like: full Qwen2ForCausalLM weights ('model.' prefix), no EOS appended, no pad token
    (the exporter must fall back to EOS), right padding."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _write_decoder_tokenizer(directory, append_eos=None, eos="<|im_end|>", pad=None, padding_side="right")
    eos_id = tokenizer.token_to_id("<|im_end|>")
    config = Qwen2Config(**_decoder_kwargs(tokenizer.get_vocab_size(), layers, eos_id, None))
    _save_decoder(Qwen2ForCausalLM, config, directory, seed=seed)
    return directory


def make_tiny_llama(directory: Path, *, layers: int = 4, seed: int = 2) -> Path:
    """Llama-family: LlamaForCausalLM weights, EOS appended, pad = EOS, left padding."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _write_decoder_tokenizer(
        directory, append_eos="<|endoftext|>", eos="<|endoftext|>", pad="<|endoftext|>", padding_side="left"
    )
    eos_id = tokenizer.token_to_id("<|endoftext|>")
    config = LlamaConfig(head_dim=16, **_decoder_kwargs(tokenizer.get_vocab_size(), layers, eos_id, eos_id))
    _save_decoder(LlamaForCausalLM, config, directory, seed=seed)
    return directory
