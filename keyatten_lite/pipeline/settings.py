"""What an extractor was asked for: every constructor argument, validated once, as one frozen value.

``Settings.from_arguments`` takes keyatten 0.3.1's arguments (and keyatten-lite's keyword-only ones)
and refuses what cannot work on onnxruntime with a message that says what to do instead. Nothing here
touches the disk or imports onnxruntime, except a ``cuda`` device, which asks which providers exist.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keyatten_lite.errors import InvalidArgumentError, KeyAttenLiteError
from keyatten_lite.pipeline.inputs import check_int
from keyatten_lite.profiles import PROFILES, Profile, get_profile
from keyatten_lite.state.cache import DiskCache
from keyatten_lite.text.guard import check_max_chars

__all__ = ["CANDIDATE_MODES", "LANGUAGES", "PROFILES", "Settings", "check_bio_model_path", "providers_for_device"]

LANGUAGES = ("zh", "en")
CANDIDATE_MODES = ("word", "token_span", "bio")
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


@dataclass(frozen=True)
class Settings:
    model: str | os.PathLike
    model_defaulted: bool  # no model given: bio mode may then read the BIO bundle's own attention
    language: str
    providers: list[str] | None
    user_dict: Any
    layer_index: int | None
    layer_indices: list[int] | None
    layer_weights: list[float] | None
    instruction_prefix: str | None
    is_causal_override: bool | None
    dedup_nested_for_topk5: bool
    dedup_nested: bool
    candidate_scoring: str
    bio_model_path: str | os.PathLike | None
    cache_dir: str | os.PathLike | None  # None: no cache
    cache_max_bytes: int
    variant: str
    intra_op_threads: int | None
    tie_break: str
    max_chars: int
    profile: Profile

    @property
    def word_mode(self) -> bool:
        return self.candidate_scoring == "word"

    def explicit_layers(self) -> list[int] | None:
        """The layers the user asked for (``layer_indices`` or ``layer_index``), else None."""
        if self.layer_indices is not None:
            return list(self.layer_indices)
        return [self.layer_index] if self.layer_index is not None else None

    def dedup_for(self, top_k: int) -> bool:
        return self.dedup_nested or (self.dedup_nested_for_topk5 and top_k <= 5)

    def open_cache(self) -> DiskCache | None:
        return DiskCache(self.cache_dir, self.cache_max_bytes) if self.cache_dir is not None else None

    @classmethod
    def from_arguments(
        cls,
        *,
        model,
        language,
        device,
        backend,
        onnx_path,
        user_dict,
        layer_index,
        layer_indices,
        layer_weights,
        instruction_prefix,
        is_causal_override,
        dedup_nested_for_topk5,
        dedup_nested,
        candidate_scoring,
        dtype,
        bio_model_path,
        cache_enabled,
        cache_dir,
        variant,
        intra_op_threads,
        providers,
        tie_break,
        max_chars,
        cache_max_bytes,
        profile,
    ) -> "Settings":
        profile = get_profile(profile) if not isinstance(profile, Profile) else profile
        if not isinstance(language, str) or language not in LANGUAGES:
            raise InvalidArgumentError(f"language must be one of {LANGUAGES}, got {language!r}")
        if layer_indices is not None:
            layer_indices = list(layer_indices)
            if not layer_indices:
                raise InvalidArgumentError("layer_indices must not be empty")
            for i in layer_indices:
                check_int("layer_indices entry", i)
        if layer_index is not None:
            check_int("layer_index", layer_index)
        if layer_weights is not None:
            if layer_indices is None:
                raise InvalidArgumentError("layer_weights needs layer_indices")
            layer_weights = [float(w) for w in layer_weights]
            if len(layer_weights) != len(layer_indices):
                raise InvalidArgumentError(
                    f"layer_weights has {len(layer_weights)} entries but layer_indices has {len(layer_indices)}"
                )
            if any(not math.isfinite(w) or w < 0 for w in layer_weights) or sum(layer_weights) <= 0:
                raise InvalidArgumentError("layer_weights must be finite, non-negative and sum to more than 0")
        if backend not in ("auto", "onnx", "torch"):
            raise InvalidArgumentError(f"backend must be 'auto', 'torch' or 'onnx', got {backend!r}")
        if backend == "torch":
            raise InvalidArgumentError(
                "keyatten-lite runs on onnxruntime only: backend='torch' is not available "
                "(use backend='auto' or 'onnx'; export a torch model with `keyatten-lite-export`)"
            )
        if candidate_scoring not in CANDIDATE_MODES:
            raise InvalidArgumentError(f"candidate_scoring must be one of {CANDIDATE_MODES}, got {candidate_scoring!r}")
        if candidate_scoring == "bio":
            bio_model_path = check_bio_model_path(bio_model_path)
        if dtype not in ("auto", "float32", None):
            raise InvalidArgumentError(
                f"dtype={dtype!r} is a torch option; ONNX bundles run in float32 "
                "(pass variant='int8' for the smaller, faster quantised graph)"
            )
        if not isinstance(cache_enabled, bool):
            raise InvalidArgumentError(f"cache_enabled must be True or False, got {cache_enabled!r}")
        if cache_enabled:
            DiskCache(cache_dir, cache_max_bytes)  # validates both now; nothing touches the disk before a write
        max_chars = check_max_chars(max_chars)
        if is_causal_override not in (None, True, False):
            raise InvalidArgumentError("is_causal_override must be None, True or False")
        if tie_break not in ("earlier", "later"):
            raise InvalidArgumentError("tie_break must be 'earlier' or 'later'")
        if variant not in (None, "fp32", "int8"):
            raise InvalidArgumentError("variant must be None (the bundle's default), 'fp32' or 'int8'")
        if intra_op_threads is not None:
            check_int("intra_op_threads", intra_op_threads)
            if intra_op_threads < 1:
                raise InvalidArgumentError("intra_op_threads must be >= 1")
        providers = providers_for_device(device, providers)

        if model is None and onnx_path is not None:
            model = onnx_path
        defaulted = model is None
        if model is None:
            from keyatten_lite.model.registry import default_bundle_for

            model = default_bundle_for(language)
        if isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".onnx"):
            # 0.3.1 accepted a .onnx file; a bundle is the directory around it.
            model = os.path.dirname(os.path.abspath(os.fspath(model)))
        if not isinstance(model, (str, os.PathLike)) or not str(model):
            raise InvalidArgumentError("model is required: a bundle directory or a default bundle name")
        if variant is None:
            variant = default_variant(model, profile, candidate_scoring)
        return cls(
            model=model,
            model_defaulted=defaulted,
            language=language,
            providers=providers,
            user_dict=user_dict,
            layer_index=layer_index,
            layer_indices=layer_indices,
            layer_weights=layer_weights,
            instruction_prefix=instruction_prefix,
            is_causal_override=is_causal_override,
            dedup_nested_for_topk5=bool(dedup_nested_for_topk5),
            dedup_nested=bool(dedup_nested),
            candidate_scoring=candidate_scoring,
            bio_model_path=bio_model_path if candidate_scoring == "bio" else None,
            cache_dir=cache_dir if cache_enabled else None,
            cache_max_bytes=cache_max_bytes,
            variant=variant,
            intra_op_threads=intra_op_threads,
            tie_break=tie_break,
            max_chars=max_chars,
            profile=profile,
        )


def default_variant(model: str | os.PathLike, profile: Profile, candidate_scoring: str) -> str:
    """The graph variant when none is asked for.

    ``compat`` reads fp32, so parity with 0.3.1 never depends on quantisation, and so does bio mode,
    whose shared one-pass graph is fp32 (docs/bio.md). Otherwise the bundle's ``default_variant``:
    the smaller graph where it kept dev F1 within .005 of fp32 (docs/results/variants.md). A bundle
    that cannot be read yet (not built) reads fp32; opening it later reports what is wrong.
    """
    if profile.name == "compat" or candidate_scoring == "bio":
        return "fp32"
    from keyatten_lite.model.bundle import VARIANT_FILES, read_manifest, resolve_bundle_path

    try:
        manifest = read_manifest(resolve_bundle_path(model))
    except (KeyAttenLiteError, OSError, ValueError):
        return "fp32"
    chosen = manifest.get("default_variant", "fp32") if isinstance(manifest, dict) else "fp32"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if chosen not in VARIANT_FILES or not isinstance(files, dict):
        return "fp32"
    if VARIANT_FILES[chosen] not in files:  # a pack installed with one variant only: that one
        return next((v for v, f in VARIANT_FILES.items() if f in files), chosen)
    return chosen


def check_bio_model_path(path: Any) -> str | os.PathLike:
    """A BIO bundle name or directory (checked to exist now, opened on first use)."""
    if path is None:
        raise InvalidArgumentError(
            "candidate_scoring='bio' needs bio_model_path: a BIO bundle name (e.g. 'bio-minilm-en', "
            "'bio-e5-small-zh') or directory"
        )
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise InvalidArgumentError(f"bio_model_path must be a BIO bundle name or directory, got {path!r}")
    if os.fspath(path).lower().endswith(_PICKLE_SUFFIXES):
        raise InvalidArgumentError(
            f"bio_model_path {os.fspath(path)!r} looks like a torch checkpoint; keyatten-lite loads no pickles. "
            "Use a BIO bundle (`keyatten-lite models build` makes bio-minilm-en and bio-e5-small-zh)"
        )
    from keyatten_lite.model.bundle import resolve_bundle_path

    resolve_bundle_path(path)  # BundleNotFoundError with the build command when it is missing
    return path


def providers_for_device(device: Any, providers: Sequence[str] | None) -> list[str] | None:
    if providers is not None:
        return list(providers)
    if not isinstance(device, str):
        raise InvalidArgumentError(f"device must be a string such as 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        return None
    if device.startswith("cuda"):
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise InvalidArgumentError(
                f"device={device!r} needs onnxruntime's CUDAExecutionProvider, which this onnxruntime build "
                "lacks (install onnxruntime-gpu, or use device='cpu')"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise InvalidArgumentError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
