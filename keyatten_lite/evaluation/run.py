"""Running an evaluation: every system on the documents, scored at each k, with paired bootstrap
intervals against a reference; the markdown table and the chart of a result."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.evaluation.provenance import machine_info, now_iso, package_versions

def read_idf_corpus(path: str) -> list[str]:
    """An IDF corpus: a dataset (JSONL with "text", or a docsutf8/keys folder) or plain text, one document per line."""
    from keyatten_lite.evaluation.metrics import read_dataset

    target = Path(path)
    if target.is_file() and target.suffix not in (".jsonl", ".json"):
        return [line for line in target.read_text(encoding="utf-8").splitlines() if line.strip()]
    if target.is_file():
        texts = []
        with open(target, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        texts.append(str(json.loads(line)["text"]))
                    except (json.JSONDecodeError, KeyError, TypeError) as error:
                        raise InvalidArgumentError(f"{target}:{line_number}: expected a JSON object with 'text'") from error
        return texts
    return [d.text for d in read_dataset(target)]


def predict_documents(system, documents: Sequence, log=print) -> tuple[list[list[str]], list[dict[str, str]]]:
    """``system.predict(documents)``; when that raises an error about its input (InvalidArgumentError, e.g.
    0.3.1's "Failed to align word" under ``profile="compat"``), the documents one at a time, a failing one
    scoring as an empty list and recorded (id, error), so one document does not void the others' figures.
    When every document fails the error is the system's, not a document's: it is raised."""
    try:
        return system.predict(documents), []
    except InvalidArgumentError as error:
        if len({d.lang for d in documents}) > 1:
            raise  # "evaluate one language per run": about the run, which one document at a time would hide
        log(f"[eval] {system.spec}: {error}; retrying document by document")
    predictions: list[list[str]] = []
    failures: list[dict[str, str]] = []
    first_error: InvalidArgumentError | None = None
    for document in documents:
        try:
            predictions.append(system.predict([document])[0])
        except InvalidArgumentError as error:
            first_error = first_error or error
            predictions.append([])
            failures.append({"id": document.id, "error": str(error)})
    if first_error is not None and len(failures) == len(documents):
        raise first_error
    return predictions, failures


def run_evaluation(
    documents: Sequence,
    specs: Sequence[str],
    *,
    context=None,
    ks: Sequence[int] = (5, 10, 15),
    reference: str | None = None,
    n_resamples: int = 1000,
    seed: int = 20261126,
    log=print,
    progress=None,
) -> dict[str, Any]:
    """Run every system on the documents and score it; paired bootstrap of each system against ``reference``
    (default: the first system that ran). Returns the result dict written as JSON; ``predictions`` holds
    each system's ranked phrases (the caller drops it from the JSON unless asked)."""
    from keyatten_lite.evaluation.baselines import RunContext, SystemUnavailable, build_system
    from keyatten_lite.evaluation.metrics import (
        aggregate_scores, match_counts, paired_bootstrap, per_document_scores, present_gold_share, unique_normalised,
    )

    if not documents:
        raise InvalidArgumentError("no documents to evaluate (check --split/--limit/--offset/--ids-file)")
    context = context or RunContext()
    systems = [build_system(spec, context) for spec in specs]  # fail on a bad spec before any work
    gold_counts = [len(unique_normalised(d.keywords, d.lang)) for d in documents]
    result: dict[str, Any] = {
        "date": now_iso(),
        "machine": machine_info(),
        "versions": package_versions(),
        "dataset": {
            "n_documents": len(documents),
            "languages": sorted({d.lang for d in documents}),
            "present_gold_share": present_gold_share(documents),
            "mean_gold_per_document": sum(gold_counts) / len(documents),
        },
        "systems": [],
        "comparisons": [],
        "predictions": {},
    }
    # Check every system before running any: a missing bundle fails now, a missing optional package skips.
    unavailable: dict[int, str] = {}
    for index, system in enumerate(systems):
        try:
            system.check_available()
        except SystemUnavailable as error:
            unavailable[index] = str(error)
    per_doc_f1: dict[str, Any] = {}
    for index, system in enumerate(systems):
        entry: dict[str, Any] = {"spec": system.spec}
        if index in unavailable:
            log(f"[eval] skipped {system.spec}: {unavailable[index]}")
            entry.update(label=system.label, skipped=unavailable[index])
            result["systems"].append(entry)
            continue
        log(f"[eval] {system.spec}: {len(documents)} documents ...")
        started = time.perf_counter()
        predictions, failures = predict_documents(system, documents, log)
        entry["seconds"] = round(time.perf_counter() - started, 3)
        if failures:
            entry["failed_documents"] = failures
            log(f"[eval] {system.spec}: {len(failures)} document(s) failed and score 0, e.g. "
                f"{failures[0]['id']}: {failures[0]['error']}")
        counts = match_counts(predictions, documents, ks)
        scores = aggregate_scores(counts)
        entry.update(system.describe())
        entry["idf_source"] = (
            None if not system.uses_idf
            else "evaluated documents (transductive)" if system.transductive
            else context.idf_source
        )
        entry["scores"] = {str(k): v for k, v in scores.items()}
        entry["mean_predictions"] = sum(len(p) for p in predictions) / len(predictions)
        result["systems"].append(entry)
        result["predictions"][system.spec] = predictions
        per_doc_f1[system.spec] = per_document_scores(counts)["f1"]
        log(f"[eval] {system.label}: " + ", ".join(f"F1@{k} {s['macro_f1']:.3f}" for k, s in scores.items()))
        if progress is not None:  # one step per system that ran
            progress()
    ran = [s for s in result["systems"] if "scores" in s]
    if reference is None and ran:
        reference = ran[0]["spec"]
    if reference is not None and reference not in per_doc_f1:
        raise InvalidArgumentError(f"--reference {reference!r} is not among the systems that ran")
    for entry in ran:
        if entry["spec"] == reference:
            continue
        for column, k in enumerate(ks):
            boot = paired_bootstrap(
                per_doc_f1[entry["spec"]][:, column], per_doc_f1[reference][:, column],
                n_resamples=n_resamples, seed=seed,
            )
            result["comparisons"].append({
                "system": entry["spec"], "label": entry["label"], "reference": reference, "k": k, "metric": "macro_f1",
                "difference": boot.difference, "ci_low": boot.low, "ci_high": boot.high,
                "confidence": boot.confidence, "n_resamples": boot.n_resamples, "seed": boot.seed,
            })
    return result


def evaluation_markdown(result: dict[str, Any]) -> str:
    """Markdown: a table of macro P/R/F1 at each k (+ micro F1), and the bootstrap comparisons."""
    config = result.get("config", {})
    dataset = result["dataset"]
    ks = config.get("ks") or sorted({int(k) for s in result["systems"] for k in s.get("scores", {})})
    lines = [
        f"# Keyphrase evaluation: {config.get('dataset', '?')}",
        "",
        f"{dataset['n_documents']} documents ({', '.join(dataset['languages'])}; selection: "
        f"{config.get('selection', 'all')}), {dataset['mean_gold_per_document']:.1f} gold phrases per document, "
        f"{100 * dataset['present_gold_share']:.1f} % of gold present in the text. "
        f"Date {result['date']}, {result['machine']['cpu_model']} ({result['machine']['usable_cpus']} usable CPUs).",
        "",
        "Macro P/R/F1 at k on the first k de-duplicated outputs (all gold counts); micro F1 in the last columns.",
        "",
    ]
    header = ["system"] + [f"{m}@{k}" for k in ks for m in ("P", "R", "F1")] + [f"µF1@{k}" for k in ks] + ["s"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for entry in result["systems"]:
        if "scores" not in entry:
            lines.append(f"| {entry['label']} | skipped: {entry['skipped']} |")
            continue
        cells = [entry["label"]]
        for k in ks:
            s = entry["scores"][str(k)]
            cells += [f"{s['macro_p']:.3f}", f"{s['macro_r']:.3f}", f"{s['macro_f1']:.3f}"]
        cells += [f"{entry['scores'][str(k)]['micro_f1']:.3f}" for k in ks]
        cells.append(f"{entry.get('seconds', 0):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    for entry in result["systems"]:
        if entry.get("failed_documents"):
            first = entry["failed_documents"][0]
            lines += ["", f"`{entry['label']}`: {len(entry['failed_documents'])} document(s) failed and score 0 "
                          f"(first: {first['id']}: {first['error']})."]
    if result["comparisons"]:
        confidence = result["comparisons"][0]["confidence"]
        lines += [
            "",
            f"Paired bootstrap of the macro F1@k difference against `{result['comparisons'][0]['reference']}` "
            f"({result['comparisons'][0]['n_resamples']} resamples of the documents, "
            f"{100 * confidence:.0f} % percentile interval):",
            "",
            "| system | k | difference | CI |",
            "|---|---|---|---|",
        ]
        for c in result["comparisons"]:
            lines.append(f"| {c['label']} | {c['k']} | {c['difference']:+.3f} | [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] |")
    return "\n".join(lines) + "\n"


def plot_results(result: dict[str, Any], path: str) -> str | None:
    """Bar chart of macro F1@k per system; returns a message instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"--plot {path}: matplotlib is not installed (pip install matplotlib); no chart written"
    import numpy as np

    ran = [s for s in result["systems"] if "scores" in s]
    ks = result.get("config", {}).get("ks") or [5, 10, 15]
    width = 0.8 / max(len(ran), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 * len(ks) * len(ran) ** 0.5 + 4), 4))
    for index, entry in enumerate(ran):
        values = [entry["scores"][str(k)]["macro_f1"] for k in ks]
        axes.bar(np.arange(len(ks)) + index * width, values, width, label=entry["label"])
    axes.set_xticks(np.arange(len(ks)) + width * (len(ran) - 1) / 2, [f"F1@{k}" for k in ks])
    axes.set_ylabel("macro F1")
    axes.set_title(result.get("config", {}).get("dataset", ""))
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return None
