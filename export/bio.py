"""Train a BIO boundary tagger on a frozen encoder and export it as a BIO bundle (build time).

Model (keyatten 0.3.1 §7.1): the recipe's encoder, frozen; ``Linear(hidden, 3)`` emissions over the
last hidden state (tags B=0, I=1, O=2); a linear-chain CRF (start, end, transitions from -> to) with
no hard constraints. Labels, data and the split are in :mod:`.bio_data`; the CRF, the features and
the training in :mod:`.bio_train`. This module exports and builds.

Export: one graph, inputs ``input_ids``/``attention_mask``, outputs ``attentions``
[n_layers, B, S, S] (head-mean attention of every layer, as in the attention bundles) and
``emissions`` [B, S, 3]; the CRF scores go to bundle.json under ``"bio"`` as plain JSON, with the
training record. No pickle: the head weights go from training straight into the traced graph. The
steps are :mod:`.core`'s; :class:`BIOKind` adds the classifier and the emission checks.

    python -m keyatten_lite_export.bio train --recipe bio-minilm-en          # figures only
    python -m keyatten_lite_export.bio build --recipe bio-minilm-en [--home H] [--force]

torch and transformers are imported inside functions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from keyatten_lite.extractors.bio_tagger import BIO_KIND
from keyatten_lite.scoring.bio_decode import TAGS

from . import ExportError, ParityError, core, verify
from . import manifest as manifest_mod
from .bio_data import (
    data_dir,
    gold_present,
    keyword_char_spans,
    keyword_pattern,
    load_training_split,
    span_prf,
    token_labels,
)
from .bio_train import (
    EMISSIONS_OUTPUT,
    BIOHead,
    EncodedDoc,
    crf_log_likelihood,
    crf_viterbi,
    encode_documents,
    onnx_hidden_states,
    torch_hidden_states,
    train_bio,
    train_head,
)
from .encoder import EncoderKind
from .recipe_build import build_recipe

__all__ = [
    "EMISSIONS_OUTPUT",
    "keyword_pattern",
    "keyword_char_spans",
    "token_labels",
    "gold_present",
    "span_prf",
    "data_dir",
    "load_training_split",
    "crf_log_likelihood",
    "crf_viterbi",
    "BIOHead",
    "EncodedDoc",
    "torch_hidden_states",
    "onnx_hidden_states",
    "encode_documents",
    "train_head",
    "train_bio",
    "BIOKind",
    "export_bio_bundle",
    "build_bio_bundle",
    "main",
]


# ---------------------------------------------------------------------------------------------
# Export


def _make_graph_class():
    import torch

    class BIOGraph(core.attention_module_class()):
        """(head-mean attentions of ``layers`` [L, B, S, S], emissions [B, S, 3]) from one pass."""

        def __init__(self, model, layers: Sequence[int], head: BIOHead):
            super().__init__(model, layers)
            self.classifier = torch.nn.Linear(head.weight.shape[1], head.weight.shape[0])
            with torch.no_grad():
                self.classifier.weight.copy_(torch.from_numpy(head.weight))
                self.classifier.bias.copy_(torch.from_numpy(head.bias))

        def forward(self, input_ids, attention_mask):
            stacked, outputs = self.attend(input_ids, attention_mask)
            return stacked, self.classifier(outputs.last_hidden_state)

    return BIOGraph


def _emission_parity(torch_runs, onnx_runs, batches, head: BIOHead, tolerance: float | None) -> dict:
    """Max |torch - ORT| emissions over valid tokens; numpy Viterbi paths of both, compared."""
    from keyatten_lite.scoring.bio_decode import viterbi_decode

    worst, paths_equal, sequences = 0.0, 0, 0
    for (ids, mask), ref, got in zip(batches, torch_runs, onnx_runs):
        for row, n_valid in enumerate(mask.sum(axis=1)):
            n = int(n_valid)
            diff = np.abs(ref[row, :n].astype(np.float64) - got[row, :n].astype(np.float64))
            worst = max(worst, float(diff.max()) if np.all(np.isfinite(diff)) else float("inf"))
            crf = (head.start, head.end, head.transitions)
            paths_equal += viterbi_decode(ref[row, :n], *crf) == viterbi_decode(got[row, :n], *crf)
            sequences += 1
    return {
        "max_abs_diff": worst,
        "tolerance": tolerance,
        "viterbi_paths_equal": f"{paths_equal}/{sequences}",
    }


class BIOKind(EncoderKind):
    """An encoder's attention bundle, every layer, plus the head's emissions and the CRF in the manifest."""

    int8_on_every_batch = True  # the int8 emissions are compared on every batch
    def __init__(self, head: BIOHead, check_texts: Sequence[tuple[str, list[str]]] | None = None):
        self.head = head
        self.check_texts = check_texts

    def plan(self, config, layers, max_length):
        if core.is_causal_config(config):
            raise ExportError(f"{getattr(config, 'name_or_path', 'the model')} is a causal model; BIO bundles need an encoder")
        if self.head.weight.shape[1] != config.hidden_size:
            raise ExportError(f"head expects hidden size {self.head.weight.shape[1]}, the model has {config.hidden_size}")
        return super().plan(config, None, max_length)

    def wrap(self, model, layers):
        return _make_graph_class()(model, layers, self.head).eval()

    def output_axes(self) -> dict:
        return {**super().output_axes(), EMISSIONS_OUTPUT: {0: "batch", 1: "seq"}}

    def graph_outputs(self, n_layers: int) -> list[dict]:
        return super().graph_outputs(n_layers) + [
            {"name": EMISSIONS_OUTPUT, "dtype": "float32", "shape": ["batch", "seq", len(TAGS)]}
        ]

    def run_onnx(self, session, input_ids, attention_mask):
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        return tuple(np.asarray(x, dtype=np.float32) for x in session.run([core.OUTPUT_NAME, EMISSIONS_OUTPUT], feeds))

    def check_fp32(self, report, torch_runs, onnx_runs, batches, sides) -> None:
        emissions = _emission_parity(
            [r[1] for r in torch_runs], [r[1] for r in onnx_runs], batches, self.head, verify.FP32_TOLERANCE
        )
        report["emissions"] = emissions
        if not emissions["max_abs_diff"] <= verify.FP32_TOLERANCE:
            raise ParityError(
                f"ONNX emissions differ from torch by {emissions['max_abs_diff']:.3g} (tolerance "
                f"{verify.FP32_TOLERANCE:g}); the bundle was not written"
            )

    def check_int8(self, report, fp32_runs, int8_runs, batches) -> None:
        # Recorded, not enforced: int8 emissions move enough to change Viterbi paths, which is why
        # BIOExtractor defaults to the fp32 graph.
        report["emissions"] = _emission_parity([r[1] for r in fp32_runs], [r[1] for r in int8_runs], batches, self.head, None)

    def manifest_fields(self, hf_tokenizer, pad_id, extra_manifest):
        special_tokens, pad_token_id, rest = super().manifest_fields(hf_tokenizer, pad_id, extra_manifest)
        bio = self.head.crf_json()
        bio["training"] = {k: v for k, v in self.head.training.items() if not k.startswith("_")}
        return special_tokens, pad_token_id, {"kind": BIO_KIND, **rest, "bio": bio}

    def accept(self, work_dir: Path, manifest: dict, int8: bool) -> None:
        """BIOExtractor must open it (checksums, graph I/O, CRF); ``check_texts`` are decoded and scored."""
        from keyatten_lite.extractors.bio_tagger import BIOExtractor

        extractor = BIOExtractor(work_dir)
        if self.check_texts:
            t = time.perf_counter()
            predicted = extractor.extract_spans_batch([text for text, _ in self.check_texts])
            dev_onnx = span_prf(predicted, [gold for _, gold in self.check_texts])
            dev_onnx["seconds"] = round(time.perf_counter() - t, 1)
            dev_onnx["decoder"] = "keyatten_lite.extractors.bio_tagger.BIOExtractor.extract_spans_batch (windowed, fp32)"
            manifest["bio"]["training"]["dev_onnx"] = dev_onnx
            manifest_mod.write_manifest(work_dir, manifest)
        del extractor


def export_bio_bundle(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    head: BIOHead,
    *,
    name: str,
    int8: bool = False,
    max_length: int | None = None,
    source_info: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    extra_manifest: Mapping[str, Any] | None = None,
    probe_texts: Sequence[str] | None = None,
    check_texts: Sequence[tuple[str, list[str]]] | None = None,
) -> dict:
    """Export backbone + head to a verified BIO bundle at ``out_dir``; returns the manifest.

    Raises ParityError (writing nothing) when ORT differs from torch above 1e-4 in attention or emissions.
    ``check_texts`` ((text, gold keys) pairs) are decoded through the finished bundle with
    :class:`keyatten_lite.extractors.bio_tagger.BIOExtractor` and scored (recorded under ``bio.training.dev_onnx``).
    """
    kind = BIOKind(head, check_texts)
    return core.export_model(
        lambda config: kind,
        model_dir,
        out_dir,
        name=name,
        int8=int8,
        max_length=max_length,
        source_info=source_info,
        overwrite=overwrite,
        extra_manifest=extra_manifest,
        probe_texts=probe_texts,
    )


# ---------------------------------------------------------------------------------------------
# Recipe build


def build_bio_bundle(
    recipe: Mapping[str, Any],
    home: str | os.PathLike | None = None,
    *,
    force: bool = False,
    data: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Prepare the backbone, train the head, export ``<home>/bundles/<name>``; one result dict.

    Skips (status "skipped") a bundle whose manifest records the same recipe hash and still opens.
    """
    if recipe.get("kind") != "bio":
        raise ExportError(f"recipe {recipe.get('name')!r} is not a BIO recipe (kind {recipe.get('kind')!r})")
    say = log or (lambda message: None)
    name = recipe["name"]
    started = time.perf_counter()

    def export(info: dict, target: Path, kwargs: dict) -> dict:
        say(f"{name}: training the BIO head")
        head = train_bio(info["model_dir"], recipe, data=data, log=say)
        say(f"{name}: exporting")
        manifest = export_bio_bundle(
            info["model_dir"], target, head, name=name, check_texts=head.training.get("_dev_docs"), **kwargs
        )
        seconds = round(time.perf_counter() - started, 1)
        training = manifest["bio"]["training"]
        say(
            f"{name}: built in {seconds:.0f} s; dev F1 {training['dev']['f1']:.3f} (torch), "
            f"{(training.get('dev_onnx') or {}).get('f1', float('nan')):.3f} (onnx); emissions parity "
            f"{manifest['parity']['fp32']['emissions']['max_abs_diff']:.2e} ({target})"
        )
        return {
            "build_seconds": seconds,
            "export_seconds": manifest["export_seconds"],
            "parity": manifest["parity"],
            "dev": training["dev"],
            "dev_onnx": training.get("dev_onnx"),
        }

    return build_recipe(recipe, home, export, force=force, say=say, preparing=f"the backbone ({recipe.get('backbone')})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keyatten_lite_export.bio", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("train", "build"):
        p = sub.add_parser(command)
        p.add_argument("--recipe", required=True, help="a BIO recipe name, e.g. bio-minilm-en")
        p.add_argument("--data", default=None, help="data folder (default $KEYATTEN_LITE_DATA or ../shared/data)")
        if command == "build":
            p.add_argument("--home", default=None)
            p.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)

    from . import sources

    recipe = sources.load_recipe(args.recipe)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.command == "build":
        result = build_bio_bundle(recipe, args.home, force=args.force, data=args.data, log=say)
        print(json.dumps(result, indent=2))
        return 0
    with tempfile.TemporaryDirectory(prefix=f"bio-train-{recipe['name']}-") as work:
        info = sources.prepare(recipe, Path(work))
        head = train_bio(info["model_dir"], recipe, data=args.data, log=say)
    print(json.dumps({k: v for k, v in head.training.items() if not k.startswith("_")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
