"""Checks an export must pass before its bundle is written: ORT vs torch parity, int8 agreement.

Parity is measured on padded batches of mixed lengths (right-padded; causal models also left-padded),
over valid positions only (padded query rows are meaningless by design; padded keys are exactly 0 in
both). Valid positions are read from the attention mask, so either padding side works. The int8 agreement compares
per-token received attention (column sums over valid queries, special tokens left out), the quantity
keyatten's received-attention ranking is built on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import ExportError, ParityError

__all__ = [
    "FP32_TOLERANCE",
    "PROBE_TEXTS",
    "LONG_PROBE_TEXT",
    "pad_batch",
    "probe_batches",
    "valid_positions",
    "onnx_session",
    "run_onnx_attention",
    "valid_max_abs_diff",
    "received_attention",
    "average_ranks",
    "spearman",
    "top_k_overlap",
    "int8_agreement",
    "check_fp32_parity",
    "probe_id_lists",
]

FP32_TOLERANCE = 1e-4

# Mixed Chinese and English, short and long, so one right-padded batch has many lengths.
PROBE_TEXTS: tuple[str, ...] = (
    "Graph neural networks learn representations of nodes from their neighbourhoods.",
    "深度学习模型在自然语言处理任务中取得了显著进展。",
    "Keyword extraction ranks the words of a document by the attention they receive.",
    "量子计算利用叠加和纠缠来加速特定问题的求解，例如大整数分解与数据库搜索。",
    "Short text.",
    "基于注意力机制的关键词抽取方法无需训练数据。",
    "The transformer encoder attends over every token pair; padding positions must get zero "
    "probability, and the exported graph must agree with the PyTorch model on all valid rows.",
    "北京 是 中国 的 首都 。 Beijing is the capital of China.",
    "A",
    "电池储能系统的热管理对安全性至关重要",
)
# A few hundred tokens (truncated to max_length), run in its own small batch: long rows are
# checked too, without padding every short probe to the long one's length.
LONG_PROBE_TEXT = " ".join(PROBE_TEXTS * 3)


def probe_batches(
    id_lists: Sequence[Sequence[int]], long_ids: Sequence[int], pad_id: int, padding_side: str = "right"
):
    """Padded probe batches: all short probes; a smaller subset; the long probe with a short one."""
    return [
        pad_batch(id_lists, pad_id, padding_side),
        pad_batch(id_lists[: max(2, len(id_lists) // 3)], pad_id, padding_side),
        pad_batch([long_ids, id_lists[0]], pad_id, padding_side),
    ]


def pad_batch(
    id_lists: Sequence[Sequence[int]], pad_id: int, padding_side: str = "right"
) -> tuple[np.ndarray, np.ndarray]:
    """int64 ``input_ids`` and ``attention_mask``, padded on ``padding_side`` ("right" or "left")."""
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    width = max(len(ids) for ids in id_lists)
    input_ids = np.full((len(id_lists), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(id_lists), width), dtype=np.int64)
    for row, ids in enumerate(id_lists):
        start = 0 if padding_side == "right" else width - len(ids)
        input_ids[row, start : start + len(ids)] = ids
        attention_mask[row, start : start + len(ids)] = 1
    return input_ids, attention_mask


def onnx_session(path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_onnx_attention(session, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    (output,) = session.run(["attentions"], {"input_ids": input_ids, "attention_mask": attention_mask})
    return np.asarray(output, dtype=np.float32)


def valid_positions(attention_mask: np.ndarray, row: int) -> np.ndarray:
    """Indices of the real tokens of ``row`` (right or left padding)."""
    return np.flatnonzero(attention_mask[row])


def valid_max_abs_diff(a: np.ndarray, b: np.ndarray, attention_mask: np.ndarray) -> float:
    """Max |a-b| over valid query rows and key columns of ``[L, B, S, S]`` attention."""
    if a.shape != b.shape:
        return float("inf")
    worst = 0.0
    for row in range(attention_mask.shape[0]):
        keep = valid_positions(attention_mask, row)
        a_valid = a[:, row][:, keep][:, :, keep].astype(np.float64)
        b_valid = b[:, row][:, keep][:, :, keep].astype(np.float64)
        diff = np.abs(a_valid - b_valid)
        if not np.all(np.isfinite(diff)):
            return float("inf")
        worst = max(worst, float(diff.max(initial=0.0)))
    return worst


def received_attention(attention: np.ndarray, valid: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Column sums over the ``valid`` query rows of one ``[S, S]`` map, at key positions ``keep``.

    ``valid`` holds the real token positions; ``keep`` indexes into them.
    """
    return attention[np.ix_(valid, valid)].sum(axis=0)[keep]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks, ties sharing their mean rank (as scipy.stats.rankdata, minus one)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    return (upper - (counts - 1) / 2.0 - 1.0)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = average_ranks(np.asarray(a)), average_ranks(np.asarray(b))
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if np.array_equal(ra, rb) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """|top-k(a) ∩ top-k(b)| / k, with k capped at the number of values."""
    k = min(k, len(a))
    if k == 0:
        return 1.0
    top_a = set(np.argsort(-a, kind="stable")[:k].tolist())
    top_b = set(np.argsort(-b, kind="stable")[:k].tolist())
    return len(top_a & top_b) / k


def int8_agreement(
    runs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    special_ids: Sequence[int],
) -> dict:
    """Agreement of int8 with fp32 attention over ``(reference, quantized, input_ids, mask)`` batches.

    Mean top-10 overlap and Spearman of received attention (per layer and sequence), and the largest
    probability change.
    """
    specials = np.asarray(sorted(set(int(i) for i in special_ids)), dtype=np.int64)
    overlaps, correlations, worst, probes = [], [], 0.0, 0
    for reference, quantized, input_ids, attention_mask in runs:
        special = np.isin(input_ids, specials)
        probes += int(attention_mask.shape[0])
        worst = max(worst, valid_max_abs_diff(reference, quantized, attention_mask))
        for row in range(attention_mask.shape[0]):
            valid = valid_positions(attention_mask, row)
            keep = np.flatnonzero(~special[row, valid])
            if keep.size < 2:
                continue
            for layer in range(reference.shape[0]):
                ref = received_attention(reference[layer, row], valid, keep)
                got = received_attention(quantized[layer, row], valid, keep)
                overlaps.append(top_k_overlap(ref, got, 10))
                correlations.append(spearman(ref, got))
    return {
        "top10_overlap": round(float(np.mean(overlaps)), 6) if overlaps else None,
        "spearman": round(float(np.mean(correlations)), 6) if correlations else None,
        "max_abs_diff": float(worst),
        "probes": probes,
        "compared_against": "fp32 onnx",
    }


def check_fp32_parity(
    torch_attention: Callable[[np.ndarray, np.ndarray], np.ndarray],
    onnx_attention: Callable[[np.ndarray, np.ndarray], np.ndarray],
    batches: Sequence[tuple[np.ndarray, np.ndarray]],
    tolerance: float | None = None,
    probes: int | None = None,
) -> dict:
    """Max abs diff of ONNX vs torch attention over every batch; ParityError above ``tolerance``.

    ``probes`` is the number of distinct texts behind the batches (default: rows in all batches).
    """
    tolerance = FP32_TOLERANCE if tolerance is None else tolerance
    worst = 0.0
    for input_ids, attention_mask in batches:
        worst = max(
            worst,
            valid_max_abs_diff(
                torch_attention(input_ids, attention_mask),
                onnx_attention(input_ids, attention_mask),
                attention_mask,
            ),
        )
    report = {
        "max_abs_diff": worst,
        "tolerance": tolerance,
        "probes": int(probes if probes is not None else sum(mask.shape[0] for _, mask in batches)),
        "batch_lengths": [[int(n) for n in mask.sum(axis=1)] for _, mask in batches],
    }
    if not worst <= tolerance:
        raise ParityError(
            f"ONNX attention differs from torch by {worst:.3g} (tolerance {tolerance:g}) on the probe "
            "batches; the bundle was not written. Check the transformers/torch versions against "
            "docs/bundle-format.md, or report the model type."
        )
    return report


def probe_id_lists(hf_tokenizer, tokenizer_path: Path, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Probe encodings from the bundle's tokenizer.json, checked against the transformers tokenizer."""
    from tokenizers import Tokenizer

    bundle_tokenizer = Tokenizer.from_file(str(tokenizer_path))
    ours = [enc.ids for enc in bundle_tokenizer.encode_batch(list(texts))]
    theirs = hf_tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    for text, a, b in zip(texts, ours, theirs):
        if list(a) != list(b):
            raise ExportError(
                f"tokenizer.json encodes {text!r} differently from the transformers tokenizer "
                f"({a[:12]}... vs {b[:12]}...); this model's tokenizer cannot be bundled as is"
            )
    return [ids[:max_length] for ids in ours]
