"""What an extractor opens, each on first use: the bundle and its tokenizer, the Chinese segmenter, the
BIO tagger, and what follows from them (read layers, instruction prefix, causal or not).

One ``Resources`` per extractor; every stage gets it. The locks make first use safe from several
threads. Nothing is opened before a document needs it, so argument errors and blank documents never
load a model.
"""

from __future__ import annotations

import math
import threading

from keyatten_lite.errors import BundleNotFoundError, InvalidArgumentError
from keyatten_lite.model.align import configured_tokenizer
from keyatten_lite.pipeline.inputs import clean_text
from keyatten_lite.pipeline.settings import Settings
from keyatten_lite.text.guard import sanitize_text

DEFAULT_ZH_CAUSAL_INSTRUCTION_PREFIX = "核心关键词、关键实体、主题："
# The BIO graph runs fp32: its int8 graph changes Viterbi paths too often (docs/bio.md).
BIO_VARIANT = "fp32"


def recommended_layer(num_layers: int) -> int:
    """keyatten's default read layer for decoder models: about three quarters of the depth."""
    return min(num_layers - 1, max(0, int(math.floor(0.75 * num_layers))))


class Resources:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        # Held across "dictionary fingerprint, then segment" so that, with 《》 titles registered by
        # other threads, a cache key always describes the dictionary the document was segmented with.
        self.segment_lock = threading.RLock()
        self._bundle = None
        self._tokenizer = None
        self._segmenter = None
        self._prefix_words: tuple[list[str], list[str]] | None = None
        # bio mode: the BIO extractor, whether its graph also serves the attention (same backbone: one
        # forward pass), and the attention bundle's name (its tuned layers).
        self._bio_lock = threading.Lock()
        self._bio = None
        self.bio_shared = False
        self.bio_attention_name: str | None = None
        self.bio_window_tokenizer = None
        # values the stages derive once per extractor (e.g. the raw-text constants of the bundle)
        self.memo: dict = {}

    # ------------------------------------------------------------------ bundle
    @property
    def bundle_loaded(self) -> bool:
        return self._bundle is not None

    @property
    def bundle(self):
        """The opened attention bundle (in bio mode the BIO bundle when it shares the backbone)."""
        if self._bundle is None and self.settings.candidate_scoring == "bio":
            self.bio()
        if self._bundle is None:
            with self._lock:
                if self._bundle is None:
                    from keyatten_lite.model.bundle import open_bundle

                    s = self.settings
                    self._bundle = open_bundle(
                        s.model, variant=s.variant, intra_op_threads=s.intra_op_threads, providers=s.providers
                    )
        return self._bundle

    @property
    def tokenizer(self):
        """The bundle's tokenizer set to truncate at max_length, for 0.3.1's stages (made on first use:
        the raw-text stages read the bundle's own tokenizer, and a copy of a 250k-piece tokenizer costs
        about 0.9 s and 290 MiB)."""
        if self._tokenizer is None:
            bundle = self.bundle
            with self._lock:
                if self._tokenizer is None:
                    self._tokenizer = configured_tokenizer(bundle.tokenizer(), bundle.max_length)
        return self._tokenizer

    @property
    def is_causal(self) -> bool:
        if self.settings.is_causal_override is not None:
            return bool(self.settings.is_causal_override)
        return bool(self.bundle.is_causal)

    def read_layers(self) -> tuple[list[int], list[float]]:
        """Positions in the bundle's exported layers to read (0.3.1's rules), and their fusion weights."""
        s = self.settings
        bundle = self.bundle
        if s.layer_indices is not None:
            wanted = list(s.layer_indices)
            weights = list(s.layer_weights) if s.layer_weights is not None else [1.0] * len(wanted)
        else:
            if s.layer_index is not None:
                layer = s.layer_index
            elif self.is_causal:
                layer = causal_default_layer(bundle)
            else:
                layer = -1
            wanted, weights = [layer], [1.0]
        return [bundle.layer_position(i) for i in wanted], weights

    # ------------------------------------------------------------------ text
    @property
    def segmenter(self):
        """The extractor's own jieba state (Chinese), created on first use."""
        if self._segmenter is None:
            with self._lock:
                if self._segmenter is None:
                    from keyatten_lite.text.guard import BoundedChineseSegmenter

                    self._segmenter = BoundedChineseSegmenter(user_dict=self.settings.user_dict)
        return self._segmenter

    @property
    def segmenter_loaded(self) -> bool:
        return self._segmenter is not None

    def clean(self, text: str) -> str:
        return clean_text(text, self.settings.max_chars)

    def segment_clean(self, text: str) -> tuple[list[str], list[str]]:
        """Words and POS tags of an already cleaned text (0.3.1's segmentation)."""
        if self.settings.language == "zh":
            segmenter = self.segmenter
            with self.segment_lock:
                return segmenter.segment(text)
        from keyatten_lite.text.segment import segment_english

        return segment_english(text)

    def dictionary_state(self) -> str | None:
        """Fingerprint of the segmentation dictionary (user dict content + 《》 titles so far)."""
        if self.settings.language != "zh":
            return None
        return self.segmenter.dictionary_fingerprint()

    def resolved_prefix(self) -> str | None:
        s = self.settings
        if s.instruction_prefix is not None:
            stripped = str(s.instruction_prefix).strip()
            return stripped or None
        if self.is_causal and s.language.startswith("zh"):
            return DEFAULT_ZH_CAUSAL_INSTRUCTION_PREFIX
        return None

    def prefix_words(self) -> tuple[list[str], list[str]]:
        """The instruction prefix as words (§2.7), segmented once."""
        if self._prefix_words is None:
            prefix = self.resolved_prefix()
            self._prefix_words = ([], []) if prefix is None else self.segment_clean(sanitize_text(prefix))
        return self._prefix_words

    def token_prefix(self) -> str | None:
        """The token path uses the prefix only for causal models on Chinese (§2.7)."""
        prefix = self.resolved_prefix()
        return prefix if prefix and self.is_causal and self.settings.language.startswith("zh") else None

    # ------------------------------------------------------------------ BIO tagger
    def bio(self):
        """The BIO extractor (opened on first use); decides whether its graph also gives the attention."""
        if self._bio is None:
            with self._bio_lock:
                if self._bio is None:
                    from keyatten_lite.extractors.bio_tagger import BIOExtractor

                    s = self.settings
                    bio = BIOExtractor(
                        s.bio_model_path, intra_op_threads=s.intra_op_threads, providers=s.providers, variant=BIO_VARIANT
                    )
                    shared, name = self._bio_attention_source(bio)
                    if shared:
                        with self._lock:
                            if self._bundle is None:
                                self._bundle = bio.bundle
                    self.bio_shared, self.bio_attention_name = shared, name
                    self._bio = bio
        return self._bio

    def _bio_attention_source(self, bio) -> tuple[bool, str]:
        """(the BIO graph's attention is the attention bundle's, the attention bundle's name).

        Shared when both bundles come from the same source files with the same tokenizer and window
        length, and the requested variant is the one the BIO graph runs: one forward pass then gives
        the spans and the attention. With no ``model`` given and the default attention bundle not
        built, the BIO bundle's own attention serves (it exports every layer).
        """
        from keyatten_lite.model.bundle import read_manifest, resolve_bundle_path

        s = self.settings
        bio_manifest = bio.bundle.manifest
        try:
            path = resolve_bundle_path(s.model)
        except BundleNotFoundError:
            if not s.model_defaulted:
                raise
            return True, str(bio_manifest.get("backbone") or bio.bundle.name)
        manifest = read_manifest(path)
        name = str(manifest.get("backbone") or manifest.get("name") or path.name)
        if manifest.get("architecture") != "encoder" and s.is_causal_override is not False:
            raise InvalidArgumentError(
                f"candidate_scoring='bio' needs an encoder attention bundle; {name!r} is "
                f"{manifest.get('architecture')!r} (use the BIO bundle's own backbone, e.g. leave model unset)"
            )

        def backbone(m: dict) -> tuple:
            source = m.get("source") or {}
            tokenizer = (m.get("files") or {}).get((m.get("tokenizer") or {}).get("file", "tokenizer.json")) or {}
            return (source.get("model_id"), source.get("files_sha256"), tokenizer.get("sha256"), m.get("max_length"))

        shared = s.variant == BIO_VARIANT and None not in backbone(manifest)[:1] and backbone(manifest) == backbone(bio_manifest)
        return shared, name


def causal_default_layer(bundle) -> int:
    """The manifest's default layer: always one the graph exports (floor(0.75 L) unless the bundle
    was exported at other layers), so automatic layer choice never fails (0.3.1 §12.1 item 1)."""
    if getattr(bundle, "default_layer", None) is not None:
        return int(bundle.default_layer)
    return recommended_layer(int(bundle.num_layers))
