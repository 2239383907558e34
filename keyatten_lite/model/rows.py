"""Run each batch row on its own: for graphs whose numbers depend on the rest of the batch.

The int8 variant is dynamically quantised: every MatMul input is scaled by the largest activation in
the *whole tensor*, padding and other documents included. Measured on e5-small-zh (20 CSL abstracts):
a document's attention probabilities in a padded batch of 8 differ from its own call by up to 0.16,
so its keywords would depend on which documents it was batched with (and a served document on what
else was queued). Run alone and unpadded, each row gets the numbers its own call gets, whatever the
batch. fp32 graphs do not need this (batched and alone agree to 2e-7).

Outputs are put back in the batch layout: attention ``[layers, batch, seq, seq]`` and per-token
outputs ``[batch, seq, ...]`` get each row's values at its valid positions and zeros at padding,
which every consumer masks out (padding rows and columns carry no information in any graph).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

__all__ = ["run_rows_alone"]


def run_rows_alone(
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    feeds: Mapping[str, np.ndarray],
    layout: Mapping[str, tuple[int, tuple[int, ...]]],
) -> dict[str, np.ndarray]:
    """``run(feeds)`` row by row, each row cut to its ``attention_mask`` positions.

    ``layout`` gives, per output name, (batch axis, token axes): ``(1, (2, 3))`` for attention
    ``[layers, batch, seq, seq]``, ``(0, (1,))`` for per-token outputs ``[batch, seq, ...]``.
    """
    mask = np.asarray(feeds["attention_mask"])
    batch, seq = mask.shape
    outputs: dict[str, np.ndarray] = {}
    for row in range(batch):
        valid = np.flatnonzero(mask[row])
        if valid.size == 0:  # an all-padding row: run one position so the shapes are known
            valid = np.arange(1)
        row_feeds = {name: np.ascontiguousarray(value[row : row + 1, valid]) for name, value in feeds.items()}
        for name, value in run(row_feeds).items():
            axis, token_axes = layout[name]
            if name not in outputs:
                shape = list(value.shape)
                shape[axis] = batch
                for a in token_axes:
                    shape[a] = seq
                outputs[name] = np.zeros(shape, dtype=np.float32)
            index: list = [slice(None)] * value.ndim
            index[axis] = row
            grids = np.ix_(*([valid] * len(token_axes)))
            for a, grid in zip(token_axes, grids):
                index[a] = grid
            outputs[name][tuple(index)] = np.take(value, 0, axis=axis)
    return outputs
