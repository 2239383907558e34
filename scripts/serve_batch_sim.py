#!/usr/bin/env python3
"""Simulate the serve batcher's policies with a fitted per-call cost model (no model, no noise).

    .venv/bin/python scripts/serve_batch_sim.py [--clients 8,32] [--requests 3000]

Closed-loop clients (each sends its next single-text request --think-ms after its answer) share one
worker. A call of B documents padded to S real tokens (counted with the bundle's tokenizer) takes
a + b*B*S + c*B*S^2 + d*B seconds, the fit of `scripts/serve_batch_profile.py --fit` at load
average 2.4 (defaults below). Policies:

- off: one document per call, in arrival order (`--max-batch 1`);
- fifo N: up to N queued documents in arrival order in one call (the batcher before length buckets);
- buckets N: up to N queued documents, split by keyatten_lite.serve.batcher.plan_groups on
  estimate_tokens, the calls in the order of their oldest document, the next micro-batch when they
  are all done (the batcher now).

It prints docs/s, p50/p95 latency and documents per call for each. Real runs add what this leaves
out (HTTP, the load generator, other jobs, GIL hand-offs, and the extra cost of large padded
passes under load, which makes fifo far worse in practice than here), so compare the bucket
policies with off, not absolute values.
"""

from __future__ import annotations

import argparse
import heapq
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from serve_load_test import load_texts, percentile  # noqa: E402


def simulate(policy: str, max_batch: int, clients: int, n_requests: int, tokens, estimates, cost, think: float) -> dict:
    from keyatten_lite.serve.batcher import plan_groups

    n_texts = len(tokens)
    arrivals: list[tuple[float, int, int]] = []  # (time, sequence, text index)
    sent = 0
    for _ in range(clients):
        heapq.heappush(arrivals, (0.0, sent, sent % n_texts))
        sent += 1
    t = 0.0
    queue: list[tuple[float, int, int]] = []
    latencies: list[float] = []
    calls = 0
    ema = None  # seconds of model time per document, as the batcher tracks it
    while len(latencies) < n_requests:
        while arrivals and arrivals[0][0] <= t:
            queue.append(heapq.heappop(arrivals))
        if not queue:
            t = arrivals[0][0]
            continue
        queue.sort()
        if policy in ("oldest", "window", "half", "aged"):
            # one call at a time: the oldest document's plan_groups call, planned over the whole
            # queue (oldest) or over its first 2N documents only (window: bounded overtaking)
            if policy == "oldest":
                pool = queue
            elif policy == "window":
                pool = queue[: 2 * max_batch]
            elif policy == "half":
                pool = queue[: max(2, (len(queue) + 1) // 2)]
            else:  # aged: documents that arrived within N documents' model time (EMA) of the oldest
                window = max_batch * ema if ema is not None else float("inf")
                pool = [d for d in queue if d[0] <= queue[0][0] + window]
            plan = plan_groups([estimates[d[2]] for d in pool], max_batch)
            group = [pool[i] for i in sorted(next(g for g in plan if 0 in g))]
            taken = {id(d) for d in group}
            queue = [d for d in queue if id(d) not in taken]
            seconds = cost(len(group), max(tokens[d[2]] for d in group))
            t += seconds
            ema = seconds / len(group) if ema is None else 0.8 * ema + 0.2 * seconds / len(group)
            calls += 1
            for arrived, _, _ in group:
                latencies.append(t - arrived)
                heapq.heappush(arrivals, (t + think, sent, sent % n_texts))
                sent += 1
            continue
        take = 1 if policy == "off" else max_batch
        batch, queue = queue[:take], queue[take:]
        if policy == "buckets" and len(batch) > 1:
            groups = [[batch[i] for i in sorted(g)] for g in plan_groups([estimates[d[2]] for d in batch], max_batch)]
            groups.sort(key=lambda g: g[0])
        else:
            groups = [batch]
        for group in groups:
            t += cost(len(group), max(tokens[d[2]] for d in group))
            calls += 1
            for arrived, _, _ in group:
                latencies.append(t - arrived)
                heapq.heappush(arrivals, (t + think, sent, sent % n_texts))
                sent += 1
    latencies = sorted(latencies[:n_requests])
    return {
        "docs_per_s": len(latencies) / t,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p95_ms": 1000 * percentile(latencies, 95),
        "docs_per_call": (sent - clients) / calls,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="8,32")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--policies", default="off,fifo16,buckets4,buckets8,buckets16")
    ap.add_argument("--think-ms", type=float, default=2.0, help="client time between answer and next request")
    ap.add_argument("--a-ms", type=float, default=5.0, help="fixed cost per call")
    ap.add_argument("--b-ms", type=float, default=0.093, help="cost per padded token")
    ap.add_argument("--c-ms", type=float, default=1.33e-4, help="cost per attention cell (B x S^2)")
    ap.add_argument("--d-ms", type=float, default=0.18, help="cost per document")
    args = ap.parse_args(argv)
    if not 1 <= args.requests <= 1_000_000:
        ap.error("--requests must be in 1..1000000")

    from keyatten_lite.model.bundle import open_bundle
    from keyatten_lite.serve.batcher import estimate_tokens

    texts, source = load_texts(200, 600)
    tok = open_bundle("minilm-l6-en").tokenizer()
    tokens = [len(e.ids) + 2 for e in tok.encode_batch(texts, add_special_tokens=False)]
    estimates = [estimate_tokens(t, "en") for t in texts]

    def cost(b: int, s: int) -> float:
        return (args.a_ms + args.b_ms * b * s + args.c_ms * b * s * s + args.d_ms * b) / 1000

    print(f"{len(texts)} texts ({source}), {min(tokens)}-{max(tokens)} tokens; cost per call "
          f"{args.a_ms:g} ms + {args.b_ms:g} ms/token + {args.c_ms:g} ms/cell + {args.d_ms:g} ms/doc")
    for clients in (int(c) for c in args.clients.split(",") if c.strip()):
        print(f"--- {clients} clients")
        for spec in args.policies.split(","):
            name = spec.rstrip("0123456789")
            size = int(spec[len(name):] or 1)
            if name in ("half",):
                size = 8
            if name not in ("off", "fifo", "buckets", "oldest", "window", "half", "aged"):
                ap.error(f"unknown policy {spec!r}")
            r = simulate(name, size, clients, args.requests, tokens, estimates, cost, args.think_ms / 1000)
            print(f"  {spec:<10} {r['docs_per_s']:6.1f} docs/s  p50 {r['p50_ms']:5.0f} ms  p95 {r['p95_ms']:5.0f} ms  "
                  f"{r['docs_per_call']:.2f} docs/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
