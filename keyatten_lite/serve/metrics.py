"""Prometheus text exposition (format 0.0.4), hand-written: counters, gauges and histograms.

No client library: the service needs a handful of series, and the format is a few lines of text
(https://prometheus.io/docs/instrumenting/exposition_formats/). Everything here is updated from the
event loop, but a lock keeps ``render`` consistent should a thread ever record something.
"""

from __future__ import annotations

import math
import threading
from typing import Callable, Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MODEL_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


class Histogram:
    def __init__(self, buckets: Iterable[float]) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * len(self.bounds)  # not cumulative; cumulated when rendered
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break

    def lines(self, name: str, labels: tuple[tuple[str, str], ...] = ()) -> list[str]:
        out = []
        cumulative = 0
        for bound, n in zip(self.bounds, self.counts):
            cumulative += n
            le = _number(float(bound)) if not float(bound).is_integer() else f"{float(bound):.1f}"
            out.append(f"{name}_bucket{_labels(labels + (('le', le),))} {cumulative}")
        out.append(f"{name}_bucket{_labels(labels + (('le', '+Inf'),))} {self.count}")
        out.append(f"{name}_sum{_labels(labels)} {_number(self.sum)}")
        out.append(f"{name}_count{_labels(labels)} {self.count}")
        return out


class Metrics:
    """The service's series. ``gauges`` maps a gauge name to (help, callable) read at render time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.batch_documents = Histogram(BATCH_BUCKETS)
        self.model_seconds = Histogram(MODEL_SECONDS_BUCKETS)
        self.documents = 0
        self.rejections: dict[str, int] = {}
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (path, str(status))
            self.requests[key] = self.requests.get(key, 0) + 1
            hist = self.latency.get(path)
            if hist is None:
                hist = self.latency[path] = Histogram(LATENCY_BUCKETS)
            hist.observe(seconds)

    def observe_batch(self, documents: int, seconds: float) -> None:
        with self._lock:
            self.batch_documents.observe(documents)
            self.model_seconds.observe(seconds)
            self.documents += documents

    def reject(self, limit: str) -> None:
        with self._lock:
            self.rejections[limit] = self.rejections.get(limit, 0) + 1

    def add_gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.gauges[name] = (help_text, read)

    def render(self) -> str:
        with self._lock:
            out: list[str] = []
            out += [
                "# HELP keyatten_http_requests_total HTTP requests answered, by path and status code.",
                "# TYPE keyatten_http_requests_total counter",
            ]
            for (path, code), n in sorted(self.requests.items()):
                out.append(f"keyatten_http_requests_total{_labels((('path', path), ('code', code)))} {n}")
            out += [
                "# HELP keyatten_http_request_duration_seconds Time from request to response, by path.",
                "# TYPE keyatten_http_request_duration_seconds histogram",
            ]
            for path, hist in sorted(self.latency.items()):
                out += hist.lines("keyatten_http_request_duration_seconds", (("path", path),))
            out += [
                "# HELP keyatten_batch_documents Documents per extract_keywords_batch call.",
                "# TYPE keyatten_batch_documents histogram",
                *self.batch_documents.lines("keyatten_batch_documents"),
                "# HELP keyatten_model_call_duration_seconds Duration of one extract_keywords_batch call.",
                "# TYPE keyatten_model_call_duration_seconds histogram",
                *self.model_seconds.lines("keyatten_model_call_duration_seconds"),
                "# HELP keyatten_documents_total Documents run through the model.",
                "# TYPE keyatten_documents_total counter",
                f"keyatten_documents_total {self.documents}",
                "# HELP keyatten_rejections_total Requests refused by a limit, by limit name.",
                "# TYPE keyatten_rejections_total counter",
            ]
            for limit, n in sorted(self.rejections.items()):
                out.append(f"keyatten_rejections_total{_labels((('limit', limit),))} {n}")
            gauges = list(self.gauges.items())
        for name, (help_text, read) in gauges:
            try:
                value = read()
            except Exception:
                value = float("nan")
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {_number(value)}"]
        return "\n".join(out) + "\n"
