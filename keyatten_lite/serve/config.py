"""The service's configuration and its limits, with their defaults (standard library only)."""


from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.text.language import detect_language  # noqa: F401  (the rule `extract` uses without --lang)


LANGUAGES = ("zh", "en")
PROFILES = ("default", "compat")
DEFAULT_METHOD = "received_attn"
DEFAULT_TOP_K = 10
MAX_TOP_K = 1000


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching knobs of the service; every field is a ``keyatten-lite serve`` option."""

    max_batch: int = 8  # documents per micro-batch (1 = batching off); chosen by docs/results/serve.md
    max_wait_ms: float = 0.0  # how long the first document after an idle spell waits for company
    length_buckets: bool = True  # a call takes documents of similar length (False: arrival order)
    overtake_docs: float = 3.0  # a call takes documents up to this many documents' model time younger than its oldest
    max_queue: int = 256  # documents waiting for the model; beyond this: 503 + Retry-After
    max_body_bytes: int = 1_048_576  # request body; beyond this: 413
    max_texts: int = 64  # documents per request; beyond this: 422
    max_chars: int = 20_000  # characters per document; beyond this: 422
    threads: int | None = None  # onnxruntime intra-op threads (None: onnxruntime's default)
    drain_timeout_s: float = 30.0  # how long shutdown waits for queued documents

    def validated(self) -> "ServeConfig":
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "threads" and value is None:
                continue
            if f.name == "length_buckets":
                if not isinstance(value, bool):
                    raise InvalidArgumentError(f"length_buckets must be a bool, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidArgumentError(f"{f.name} must be a number, got {value!r}")
        for name in ("max_batch", "max_queue", "max_body_bytes", "max_texts", "max_chars"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise InvalidArgumentError(f"threads must be an int >= 1, got {self.threads!r}")
        if self.max_wait_ms < 0 or self.max_wait_ms > 10_000:
            raise InvalidArgumentError(f"max_wait_ms must be in [0, 10000], got {self.max_wait_ms!r}")
        if not 0 <= self.overtake_docs <= 1_000_000:
            raise InvalidArgumentError(f"overtake_docs must be in [0, 1000000], got {self.overtake_docs!r}")
        if self.drain_timeout_s < 0:
            raise InvalidArgumentError(f"drain_timeout_s must be >= 0, got {self.drain_timeout_s!r}")
        if self.max_texts > self.max_queue:
            # A request is queued whole or not at all, so a larger one could never be accepted.
            raise InvalidArgumentError(
                f"max_texts ({self.max_texts}) must not exceed max_queue ({self.max_queue})"
            )
        return self

    def as_dict(self) -> dict:
        return asdict(self)
