"""The measurement harness: metrics worked out by hand from their definitions, readers, splits, bootstrap,
baselines' spec parsing, the lite adapter (with a fake extractor) and the eval CLI on a tiny corpus."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.evaluation.metrics import (
    Document,
    gold_presence,
    match_counts,
    normalise_keyphrase,
    paired_bootstrap,
    per_document_scores,
    present_gold_share,
    read_dataset,
    read_folder,
    read_jsonl,
    score_predictions,
    select_documents,
    unique_normalised,
)

DATA_DIR = Path(os.environ.get("KEYATTEN_LITE_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def doc(keywords, text="", lang="en", id="d"):
    return Document(id, lang, text, tuple(keywords))


# ----------------------------------------------------------------------------------------------- metrics


def test_precision_recall_f1_macro_and_micro_by_hand():
    # Doc 1: 4 gold, 6 predictions, hits at ranks 1, 3 and 6. Doc 2: 2 gold, no predictions.
    documents = [doc(["graph", "tree", "node", "edge"]), doc(["cycle", "path"])]
    predictions = [["graph", "x", "tree", "y", "z", "node"], []]
    scores = score_predictions(predictions, documents, ks=(5, 10))
    # k=5: doc1 2 hits of min(5,6)=5 -> P .4, R .5, F1 4/9; doc2 P=R=F1=0.
    assert scores[5]["macro_p"] == pytest.approx(0.2)
    assert scores[5]["macro_r"] == pytest.approx(0.25)
    assert scores[5]["macro_f1"] == pytest.approx((4 / 9) / 2)
    # micro k=5: 2 hits / 5 predicted; 2 hits / 6 gold.
    assert scores[5]["micro_p"] == pytest.approx(2 / 5)
    assert scores[5]["micro_r"] == pytest.approx(2 / 6)
    assert scores[5]["micro_f1"] == pytest.approx(2 * 0.4 * (1 / 3) / (0.4 + 1 / 3))
    # k=10: doc1 3 hits of min(10,6)=6 -> P .5, R .75, F1 .6.
    assert scores[10]["macro_p"] == pytest.approx(0.25)
    assert scores[10]["macro_r"] == pytest.approx(0.375)
    assert scores[10]["macro_f1"] == pytest.approx(0.3)
    assert scores[10]["micro_p"] == pytest.approx(3 / 6)
    assert scores[10]["micro_r"] == pytest.approx(3 / 6)


def test_no_predictions_score_zero_not_nan():
    scores = score_predictions([[]], [doc(["graph"])], ks=(5,))
    assert scores[5] == {k: 0.0 for k in scores[5]}


def test_duplicates_removed_from_predictions_and_gold():
    # Gold de-duplicates to {neural network, graph}; predictions to [neural network, graph, tree].
    documents = [doc(["neural network", "Neural Networks", "graph"])]
    predictions = [["Neural Networks", "neural network", "graph", "graph", "tree"]]
    counts = match_counts(predictions, documents, ks=(2, 5))
    assert counts["gold"].tolist() == [2]
    assert counts["predicted"].tolist() == [[2, 3]]
    assert counts["matches"].tolist() == [[2, 2]]
    per_doc = per_document_scores(counts)
    assert per_doc["precision"][0].tolist() == pytest.approx([1.0, 2 / 3])
    assert per_doc["recall"][0].tolist() == pytest.approx([1.0, 1.0])


def test_stemming_makes_inflections_equal():
    assert normalise_keyphrase("Neural Networks", "en") == normalise_keyphrase("neural network", "en")
    assert normalise_keyphrase("key-phrase  extraction", "en") == normalise_keyphrase("Key phrases extraction", "en")
    # Tokens are joined by a single space, so different word splits stay different.
    assert normalise_keyphrase("keyphrase", "en") != normalise_keyphrase("key phrase", "en")
    # Digit runs are kept unstemmed.
    assert normalise_keyphrase("GPT-4o models", "en") == "gpt 4o model"


def test_chinese_whitespace_removed():
    assert normalise_keyphrase(" 自然 语言\t处理\n", "zh") == "自然语言处理"
    assert unique_normalised(["自然语言", "自然 语言", "NLP", "nlp"], "zh") == ["自然语言", "nlp"]
    scores = score_predictions([["自然 语言处理", "机器"]], [doc(["自然语言处理"], lang="zh")], ks=(5,))
    assert scores[5]["macro_p"] == pytest.approx(0.5)
    assert scores[5]["macro_r"] == pytest.approx(1.0)


def test_gold_presence_needs_whole_tokens_in_english():
    d = doc(["neural networks", "graph", "tree", "net"], text="Graph neural network models are used.")
    assert gold_presence(d) == (2, 4)  # "net" is not a whole token of "network"
    z = doc(["自然语言", "机器学习"], text="自然 语言处理", lang="zh")
    assert gold_presence(z) == (1, 2)
    assert present_gold_share([d, z]) == pytest.approx(3 / 6)


def test_predictions_must_match_documents():
    with pytest.raises(InvalidArgumentError):
        match_counts([["a"]], [doc(["a"]), doc(["b"])])


# ----------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_identical_systems_zero_width():
    scores = np.random.default_rng(1).random(200)
    result = paired_bootstrap(scores, scores.copy())
    assert (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)


def test_bootstrap_contains_true_difference():
    # System a beats b by exactly 0.5 on half the documents: true mean difference 0.25.
    b = np.full(400, 0.2)
    a = b + np.tile([0.5, 0.0], 200)
    result = paired_bootstrap(a, b, n_resamples=1000, seed=7)
    assert result.difference == pytest.approx(0.25)
    assert result.low < 0.25 < result.high
    assert result.low > 0.0  # clearly better: the interval excludes 0
    # Same seed, same interval; the roles swapped mirror it.
    again = paired_bootstrap(a, b, n_resamples=1000, seed=7)
    assert (again.low, again.high) == (result.low, result.high)
    mirrored = paired_bootstrap(b, a, n_resamples=1000, seed=7)
    assert mirrored.low == pytest.approx(-result.high) and mirrored.high == pytest.approx(-result.low)


def test_bootstrap_rejects_unpaired_vectors():
    with pytest.raises(InvalidArgumentError):
        paired_bootstrap([0.1, 0.2], [0.1])


# ----------------------------------------------------------------------------------------------- readers


def test_jsonl_reader(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"id": "x/1", "lang": "en", "text": "A b.", "keywords": ["a"]}) + "\n\n"
        + json.dumps({"id": "x/2", "text": "中文", "keywords": []}, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    with pytest.raises(InvalidArgumentError, match="lang"):
        read_jsonl(path)  # the second record has no lang and none was given
    documents = read_jsonl(path, default_lang="zh")
    assert [(d.id, d.lang, d.text, d.keywords) for d in documents] == [
        ("x/1", "en", "A b.", ("a",)),
        ("x/2", "zh", "中文", ()),
    ]
    path.write_text('{"id": "x/1", "text": "t"}\n', encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match="keywords"):
        read_jsonl(path, "en")


def test_folder_reader(tmp_path):
    (tmp_path / "docsutf8").mkdir()
    (tmp_path / "keys").mkdir()
    (tmp_path / "docsutf8" / "7.txt").write_text("Graph mining.", encoding="utf-8")
    (tmp_path / "keys" / "7.key").write_text("graph mining\n\n  graph \n", encoding="utf-8")
    (tmp_path / "docsutf8" / "8.txt").write_text("No keys.", encoding="utf-8")  # skipped: no key file
    documents = read_folder(tmp_path)
    assert [(d.id, d.lang, d.text, d.keywords) for d in documents] == [("7", "en", "Graph mining.", ("graph mining", "graph"))]
    assert read_dataset(tmp_path) == documents


def test_split_selection_first_500_by_numeric_id():
    ids = list(range(1, 601))
    order = np.random.default_rng(0).permutation(ids)
    documents = [doc([], id=f"inspec/{i}") for i in order]
    selected = select_documents(documents, split="inspec-first500")
    assert [d.id for d in selected] == [f"inspec/{i}" for i in range(1, 501)]
    # Lexicographic order would have picked e.g. inspec/1000-style ids first; check 99 < 100 ordering.
    assert selected[98].id == "inspec/99" and selected[99].id == "inspec/100"
    assert [d.id for d in select_documents(selected, offset=10, limit=3)] == ["inspec/11", "inspec/12", "inspec/13"]


def test_semeval2017_splits_and_ids():
    documents = [doc([], id=f"s/{i:03d}") for i in range(250)]
    first = select_documents(documents, split="semeval2017-first200")
    rest = select_documents(documents, split="semeval2017-rest")
    assert len(first) == 200 and len(rest) == 50 and first[-1].id == "s/199" and rest[0].id == "s/200"
    assert [d.id for d in select_documents(documents, ids=["s/007", "s/003"])] == ["s/003", "s/007"]
    with pytest.raises(InvalidArgumentError, match="not in the dataset"):
        select_documents(documents, ids=["nope"])
    with pytest.raises(InvalidArgumentError, match="unknown split"):
        select_documents(documents, split="inspec-first5")


def test_semeval2010_dev_is_every_third_id_and_rest_the_others():
    # ids whose string order differs from file order and from numeric order
    documents = [doc([], id=f"s/C-{n}") for n in (10, 1, 2, 11, 3, 20, 4)]
    dev = select_documents(documents, split="semeval2010-dev")
    rest = select_documents(documents, split="semeval2010-rest")
    # string order: C-1, C-10, C-11, C-2, C-20, C-3, C-4 -> positions 0, 3, 6 are dev
    assert {d.id for d in dev} == {"s/C-1", "s/C-2", "s/C-4"}
    assert [d.id for d in rest] == ["s/C-10", "s/C-11", "s/C-3", "s/C-20"]  # file order kept


@pytest.mark.skipif(not (DATA_DIR / "en" / "inspec.jsonl").is_file(), reason=f"datasets not found in {DATA_DIR}")
def test_inspec_first500_matches_peer_present_share():
    documents = select_documents(read_jsonl(DATA_DIR / "en" / "inspec.jsonl"), split="inspec-first500")
    assert len(documents) == 500
    # peer-measurements.md: 61.4 % of gold present in the text on Inspec first 500.
    assert present_gold_share(documents) == pytest.approx(0.614, abs=0.0006)


# ----------------------------------------------------------------------------------------------- systems


def test_english_tfidf_ngrams_stop_at_punctuation_and_stop_words():
    from keyatten_lite.evaluation.baselines import english_ngram_candidates, english_stop_words

    phrases = english_ngram_candidates("Graph neural networks, and the tree-based models.", english_stop_words())
    assert phrases == [
        "graph", "graph neural", "graph neural networks", "neural", "neural networks", "networks",
        "tree-based", "tree-based models", "models",
    ]


def test_tfidf_ranking_uses_sublinear_tf_and_smooth_idf():
    from collections import Counter

    from keyatten_lite.evaluation.baselines import rank_by_tfidf, smooth_idf

    assert smooth_idf(1, 3) == pytest.approx(np.log(4 / 2) + 1)
    # "common" occurs 4 times but in every document; "rare" once in one of 3 documents.
    # common: (1 + ln 4) * 1 = 2.386; rare: 1 * (ln 2 + 1) = 1.693; "mid": (1 + ln 2) * (ln(4/3) + 1) = 2.181.
    ranked = rank_by_tfidf(Counter({"rare": 1, "common": 4, "mid": 2}), Counter({"common": 3, "rare": 1, "mid": 2}), 3, 2)
    assert ranked == ["common", "mid"]


def test_unknown_system_spec_lists_forms():
    from keyatten_lite.evaluation.baselines import RunContext, build_system

    with pytest.raises(InvalidArgumentError, match="lite:<bundle>:<method>"):
        build_system("bm25", RunContext())
    system = build_system("lite:/path/to/bundle:samrank_idf:int8", RunContext())
    assert (system.bundle, system.method, system.variant) == ("/path/to/bundle", "samrank_idf", "int8")
    system = build_system("keyatten:/m/dir:cls_attn", RunContext())
    assert (system.model_dir, system.method) == ("/m/dir", "cls_attn")


class FakeExtractor:
    """Records what the adapter asks; returns each text's words reversed as 'keywords'."""

    instances: list["FakeExtractor"] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.idf_texts = None
        self.calls = []
        FakeExtractor.instances.append(self)

    def fit_idf(self, texts):
        self.idf_texts = list(texts)
        return {}

    def extract_keywords_batch(self, texts, method="received_attn", top_k=10, batch_size=16, with_scores=False):
        self.calls.append((method, top_k, batch_size))
        return [text.split()[::-1][:top_k] for text in texts]


def test_lite_adapter_transductive_and_corpus_idf():
    from keyatten_lite.evaluation.baselines import RunContext, build_system

    FakeExtractor.instances.clear()
    documents = [doc(["b"], text="a b c"), doc(["z"], text="x y z")]
    context = RunContext(extractor_factory=FakeExtractor, threads=2, batch_size=8, top_n=15)
    system = build_system("lite:minilm-l6-en:samrank_idf", context)
    assert system.predict(documents) == [["c", "b", "a"], ["z", "y", "x"]]
    fake = FakeExtractor.instances[-1]
    assert fake.kwargs == {"model": "minilm-l6-en", "language": "en", "variant": "fp32", "intra_op_threads": 2}
    assert fake.idf_texts == ["a b c", "x y z"] and fake.calls == [("samrank_idf", 15, 8)]
    assert system.label == "lite:minilm-l6-en:samrank_idf (transductive idf)"

    context.idf_texts = ["other corpus"]
    system = build_system("lite:minilm-l6-en:samrank_idf", context)
    system.predict(documents)
    assert FakeExtractor.instances[-1].idf_texts == ["other corpus"]
    assert "transductive" not in system.label

    system = build_system("lite:minilm-l6-en:cls_attn", context)
    system.predict(documents)
    assert FakeExtractor.instances[-1].idf_texts is None  # no IDF for a plain attention method
    assert system.label == "lite:minilm-l6-en:cls_attn"


# ----------------------------------------------------------------------------------------------- CLI


def _run_eval_cli(argv):
    from keyatten_lite.cli import eval as cli_eval

    parser = argparse.ArgumentParser()
    cli_eval.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_eval_cli_writes_json_and_markdown(tmp_path, capsys):
    corpus = tmp_path / "tiny.jsonl"
    records = [
        {"id": "t/2", "lang": "en", "text": "Graph neural networks learn from graph data. Graph data is everywhere.",
         "keywords": ["graph neural networks", "graph data"]},
        {"id": "t/1", "lang": "en", "text": "Keyword extraction ranks candidate phrases; keyword extraction is old.",
         "keywords": ["keyword extraction", "candidate phrases", "absent phrase"]},
        {"id": "t/3", "lang": "en", "text": "Attention weights of transformers score words.", "keywords": ["attention"]},
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "out" / "result.json"
    systems = ["tfidf", "tfidf-cands"]
    try:
        import yake  # noqa: F401

        systems.append("yake")
    except ImportError:
        pass
    argv = ["eval", str(corpus), "--limit", "3", "-o", str(out), "-q", "--bootstrap-resamples", "50"]
    for spec in systems:
        argv += ["-s", spec]
    assert _run_eval_cli(argv) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    markdown = out.with_suffix(".md").read_text(encoding="utf-8")
    assert [s["spec"] for s in result["systems"]] == systems
    for system in result["systems"]:
        assert set(system["scores"]) == {"5", "10", "15"}
        for k in ("5", "10", "15"):
            assert set(system["scores"][k]) == {"macro_p", "macro_r", "macro_f1", "micro_p", "micro_r", "micro_f1"}
            assert all(0.0 <= v <= 1.0 for v in system["scores"][k].values())
        assert system["label"] in markdown
    assert result["dataset"]["n_documents"] == 3
    assert result["dataset"]["present_gold_share"] == pytest.approx(5 / 6)
    assert result["config"]["document_ids"] == ["t/2", "t/1", "t/3"]
    assert {c["system"] for c in result["comparisons"]} == set(systems[1:])
    assert result["versions"]["numpy"] and result["machine"]["logical_cpus"]
    assert "(transductive idf)" in result["systems"][0]["label"]
    assert "predictions" not in result


def test_eval_cli_rejects_top_n_below_k(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "1", "lang": "en", "text": "t", "keywords": []}) + "\n", encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match="top-n"):
        _run_eval_cli(["eval", str(corpus), "--top-n", "10", "-o", str(tmp_path / "r.json"), "-q"])


def test_plot_without_matplotlib_gives_message(tmp_path):
    from keyatten_lite.evaluation.run import plot_results

    result = {"systems": [{"label": "x", "scores": {"5": {"macro_f1": 0.1}}}], "config": {"ks": [5]}}
    message = plot_results(result, str(tmp_path / "p.png"))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert message and "matplotlib" in message
    else:
        assert message is None and (tmp_path / "p.png").stat().st_size > 0


# ----------------------------------------------------------------------------------------------- bench plumbing


def test_bench_plan_interleaves_and_summary_takes_medians():
    from keyatten_lite.evaluation.bench import plan_steps, summarise

    steps = plan_steps(corpus="c", limit=5, bundles=["b"], variants=["fp32", "int8"], methods=["received_attn"],
                       threads=[1, 2], keyatten_model="/hf", batch_size=4, single_docs=2, repeats=2, cold=True)
    kinds = [(s["step"], s.get("variant"), s["threads"]) for s in steps[:7]]
    assert kinds == [("lite", "fp32", 1), ("lite", "int8", 1), ("keyatten", None, 1),
                     ("lite", "fp32", 2), ("lite", "int8", 2), ("keyatten", None, 2), ("cold", "fp32", 2)]
    assert len(steps) == 2 * (6 + 3)
    records = [{"config": s, "result": {"ok": True, "docs_per_s": float(s["repeat"] * 10 + 1)}} for s in steps]
    records[0]["result"] = {"ok": False, "error": "boom"}
    summary = summarise(records)
    lite_fp32_1 = next(r for r in summary["throughput"] if r["system"].endswith("fp32") and r["threads"] == 1)
    assert lite_fp32_1["repeats"] == 1 and lite_fp32_1["docs_per_s"] == 11.0  # the failed repeat is left out
    lite_int8_2 = next(r for r in summary["throughput"] if r["system"].endswith("int8") and r["threads"] == 2)
    assert lite_int8_2["docs_per_s"] == 6.0 and lite_int8_2["docs_per_s_range"] == [1.0, 11.0]
    assert len(summary["cold_start"]) == 3


def test_bench_plot_draws_every_system_or_says_why(tmp_path):
    from keyatten_lite.evaluation.bench import plan_steps, plot_bench, summarise

    steps = plan_steps(corpus="c.jsonl", limit=5, bundles=["b"], variants=["fp32"], methods=["received_attn"],
                       threads=[1, 2], keyatten_model="/hf", batch_size=4, single_docs=2, repeats=1, cold=True)
    records = [{"config": s, "result": {"ok": True, "docs_per_s": 3.0 + i, "wall_s": 1.5}} for i, s in enumerate(steps)]
    result = {"config": {"corpus": "c.jsonl", "limit": 5}, "summary": summarise(records)}
    target = tmp_path / "bench.png"
    message = plot_bench(result, str(target))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert message and "matplotlib" in message and not target.exists()
    else:
        assert message is None
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_ratios_against_keyatten_worked_by_hand():
    from keyatten_lite.evaluation.bench import ratio_rows, speed_report

    throughput = [
        {"system": "keyatten 0.3.1 torch (m)", "method": "received_attn", "threads": 2, "docs_per_s": 10.0, "p50_ms": 80.0},
        {"system": "keyatten-lite m fp32", "method": "received_attn", "threads": 2, "docs_per_s": 25.0,
         "p50_ms": 40.0, "model_share": 0.8},
        {"system": "keyatten-lite m int8", "method": "received_attn", "threads": 1, "docs_per_s": 5.0},
    ]
    cold = [{"system": "keyatten 0.3.1 torch (m)", "threads": 2, "wall_s": 9.0, "peak_rss_bytes": 600},
            {"system": "keyatten-lite m fp32", "threads": 2, "wall_s": 3.0, "peak_rss_bytes": 200}]
    result = {"summary": {"throughput": throughput, "cold_start": cold}, "records": [],
              "date": "d", "machine": {"cpu_model": "cpu", "usable_cpus": 2},
              "config": {"corpus": "c", "limit": 3, "batch_size": 16, "single_docs": 2, "repeats": 1}}
    rows = {(r["system"], r["threads"]): r for r in ratio_rows(result)}
    fp32 = rows[("keyatten-lite m fp32", 2)]
    assert fp32["speedup"] == 2.5 and fp32["p50_speedup"] == 2.0 and fp32["total_over_floor"] == 1.25
    assert fp32["cold_speedup"] == 3.0 and fp32["cold_rss_ratio"] == 3.0
    int8 = rows[("keyatten-lite m int8", 1)]  # no keyatten run at 1 thread: no ratio, not a made-up one
    assert int8["speedup"] is None and int8["cold_speedup"] is None
    page = speed_report([result])
    assert "| keyatten-lite m fp32 | received_attn | 2 | 2.50× | 2.00× | 1.25 | 3.00× | 3.00× |" in page


def test_bench_worker_failure_is_reported_not_raised(tmp_path):
    from keyatten_lite.evaluation.bench import run_worker

    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "1", "lang": "en", "text": "Graph data.", "keywords": []}) + "\n", encoding="utf-8")
    outcome = run_worker({"step": "lite", "corpus": str(corpus), "limit": 1, "bundle": str(tmp_path / "no-bundle"),
                          "variant": "fp32", "method": "received_attn", "threads": 1, "batch_size": 2,
                          "single_docs": 1}, timeout_s=120)
    assert outcome["ok"] is False and "no-bundle" in outcome["error"]


def test_unavailable_system_is_skipped_and_missing_bundle_fails_first(monkeypatch, tmp_path):
    from keyatten_lite.evaluation import baselines
    from keyatten_lite.evaluation.run import run_evaluation
    from keyatten_lite.errors import BundleNotFoundError

    def missing(module, hint):
        raise baselines.SystemUnavailable(f"{module} is not installed ({hint})")

    monkeypatch.setattr(baselines, "_require", missing)
    documents = [doc(["graph data"], text="Graph data and graph models."), doc(["tree"], text="A tree of trees.")]
    result = run_evaluation(documents, ["tfidf", "keyatten:/hf/dir:cls_attn"], n_resamples=20, log=lambda m: None)
    assert "scores" in result["systems"][0]
    assert "keyatten is not installed" in result["systems"][1]["skipped"]
    assert result["comparisons"] == []

    calls = []
    monkeypatch.setattr(baselines.TfidfSystem, "predict", lambda self, docs: calls.append(1) or [[] for _ in docs])
    with pytest.raises(BundleNotFoundError):
        run_evaluation(documents, ["tfidf", f"lite:{tmp_path / 'absent'}:cls_attn"], log=lambda m: None)
    assert calls == []  # nothing ran before the bad bundle was reported


def test_default_profile_systems_share_one_pass(monkeypatch):
    """Several lite-default methods on one bundle: one extractor pass computes them all, each system
    gets its own method's rankings, and the IDF label is still right."""
    from keyatten_lite.evaluation import baselines
    from keyatten_lite.extractors import keyatten

    calls = []

    class FakeExtractor:
        def __init__(self, model, language, **kwargs):
            self.model, self.variant = model, kwargs.get("variant")
            self.fitted = None

        def fit_idf(self, texts):
            self.fitted = len(texts)

        def extract_keywords_methods(self, texts, methods, top_k, batch_size=16):
            calls.append((tuple(methods), self.fitted, self.variant))
            return {m: [[(f"{m}-{i}", 1.0)] for i in range(len(texts))] for m in methods}

    monkeypatch.setattr(keyatten, "KeyAttenExtractor", FakeExtractor)
    context = baselines.RunContext()
    specs = ["lite-default:b:samrank_idf", "lite-default:b:cls_attn", "lite-default:b:cls_attn:int8"]
    systems = [baselines.build_system(s, context) for s in specs]
    documents = [doc([], "text one", id="1"), doc([], "text two", id="2")]
    outputs = [system.predict(documents) for system in systems]
    assert outputs[0] == [["samrank_idf-0"], ["samrank_idf-1"]]
    assert outputs[1] == [["cls_attn-0"], ["cls_attn-1"]] and outputs[2] == outputs[1]
    # fp32: one pass for both methods with IDF fitted on the documents; int8 is another bundle variant
    assert calls == [(("samrank_idf", "cls_attn"), 2, "fp32"), (("cls_attn",), None, "int8")]
    assert systems[0].label.endswith("(transductive idf)") and systems[1].label == "lite-default:b:cls_attn"


def test_keybert_spec_builds_without_loading_anything():
    import sys

    from keyatten_lite.evaluation.baselines import RunContext, build_system

    system = build_system("keybert", RunContext())
    assert type(system).__name__ == "KeyBertSystem" and system.label == "keybert"
    with pytest.raises(InvalidArgumentError, match="unknown system spec"):
        build_system("keybert:extra", RunContext())
    # Building the spec must not load the model: keybert and torch are imported in predict().
    import subprocess

    code = ("import sys; from keyatten_lite.evaluation.baselines import RunContext, build_system; "
            "build_system('keybert', RunContext()); print('keybert' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.slow
def test_keybert_peer_ranks_the_documents_own_ngrams():
    pytest.importorskip("keybert")
    pytest.importorskip("sentence_transformers")
    from keyatten_lite.evaluation.baselines import RunContext, build_system
    from keyatten_lite.evaluation.metrics import Document

    docs = [
        Document(id="en1", lang="en", text="Graph neural networks learn node representations from graph structure.",
                 keywords=["graph neural networks"]),
        Document(id="en2", lang="en", text="Keyword extraction ranks candidate phrases by their attention.",
                 keywords=["keyword extraction"]),
        Document(id="zh1", lang="zh", text="自然语言处理是人工智能的重要方向。", keywords=["自然语言处理"]),
    ]
    system = build_system("keybert", RunContext(top_n=4, threads=1))
    system.check_available()
    predictions = system.predict(docs)
    assert len(predictions) == 3 and all(1 <= len(p) <= 4 for p in predictions)
    for doc, phrases in zip(docs[:2], predictions[:2]):
        # CountVectorizer n-grams skip the stop words they remove ("node representations graph"):
        # every word is the document's, not always the phrase.
        words = set(doc.text.lower().replace(".", " ").split())
        assert all(set(p.split()) <= words for p in phrases), phrases
        assert all(1 <= len(p.split()) <= 3 for p in phrases)
    assert all(" " not in p and p in docs[2].text for p in predictions[2])


class _FailsOnMarkedDocuments:
    """A stand-in system: raises InvalidArgumentError on any batch holding a document whose text has
    ``BAD`` (as 0.3.1's compat alignment does), predicts the text's first word otherwise."""

    spec = label = "stand-in"

    def predict(self, documents):
        if any("BAD" in d.text for d in documents):
            raise InvalidArgumentError("Failed to align word 'BAD' in text.")
        return [[d.text.split()[0]] for d in documents]


def test_a_document_that_fails_scores_zero_and_is_recorded_without_voiding_the_others():
    from keyatten_lite.evaluation.run import predict_documents

    docs = [Document(str(i), "en", text, ("alpha",)) for i, text in enumerate(["alpha one", "BAD two", "alpha three"])]
    logged = []
    predictions, failures = predict_documents(_FailsOnMarkedDocuments(), docs, logged.append)
    assert predictions == [["alpha"], [], ["alpha"]]
    assert failures == [{"id": "1", "error": "Failed to align word 'BAD' in text."}]
    assert any("document by document" in line for line in logged)
    # No failure: one batch, nothing recorded.
    assert predict_documents(_FailsOnMarkedDocuments(), [docs[0], docs[2]], logged.append) == ([["alpha"], ["alpha"]], [])


def test_when_every_document_fails_the_error_is_the_systems_and_is_raised():
    from keyatten_lite.evaluation.run import predict_documents

    docs = [Document(str(i), "en", f"BAD {i}", ("x",)) for i in range(3)]
    with pytest.raises(InvalidArgumentError, match="Failed to align"):
        predict_documents(_FailsOnMarkedDocuments(), docs, lambda line: None)


def test_a_run_mixing_languages_is_refused_not_retried_document_by_document():
    from keyatten_lite.evaluation.baselines import RunContext, build_system
    from keyatten_lite.evaluation.run import predict_documents

    docs = [Document("a", "en", "alpha one", ("alpha",)), Document("b", "zh", "机器学习", ("机器学习",))]
    with pytest.raises(InvalidArgumentError, match="mix languages"):
        predict_documents(build_system("lite-qk", RunContext()), docs, lambda line: None)
