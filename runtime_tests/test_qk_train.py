"""QK-LoRA training (export/qk_train.py): the training score is the runtime's candidate score, training
on a tiny random BERT moves the gold candidates up, the trained adapter exports as a QK bundle the runtime
ranks with exactly the trained scores, the default bundles, and CI's check that `models build`
reproduces the shipped adapters."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from keyatten_lite.extractors.qk_lora import char_scores_from_tokens, char_span_means, word_candidate_spans

sys.path.insert(0, str(Path(__file__).parent))

TEXTS = {
    "en": "Graph neural networks learn representations of nodes from graph data; keyword extraction ranks words.",
    "zh": "深度学习模型在自然语言处理任务中取得了显著进展，量子计算利用叠加和纠缠来加速求解。",
}


@pytest.mark.parametrize("language", ["en", "zh"])
def test_candidate_token_weights_give_the_runtime_candidate_scores(language):
    """weights @ max(token scores, 0) is char_span_means(char_scores_from_tokens(...)) on real
    tokenisations (the default bundles' tokenizers), prefix included."""
    from conftest import default_bundle_path

    from keyatten_lite.model.align import configured_tokenizer
    from keyatten_lite.model.bundle import open_bundle
    from keyatten_lite.pipeline.resources import DEFAULT_ZH_CAUSAL_INSTRUCTION_PREFIX
    from keyatten_lite_export.qk_train import candidate_token_weights

    bundle = open_bundle(default_bundle_path("minilm-l6-en" if language == "en" else "e5-small-zh"))
    tokenizer = configured_tokenizer(bundle.tokenizer(), 512)
    prefix = DEFAULT_ZH_CAUSAL_INSTRUCTION_PREFIX if language == "zh" else "key: "
    text = TEXTS[language]
    candidates, _, spans = word_candidate_spans(text, language)
    assert len(candidates) > 5
    encoding = tokenizer.encode(prefix + text)
    weights = candidate_token_weights(encoding.offsets, spans, len(prefix), len(text))
    rng = np.random.default_rng(0)
    for _ in range(3):
        scores = rng.normal(size=len(encoding.ids)).astype(np.float32)
        runtime = char_span_means(char_scores_from_tokens(encoding.offsets, scores, len(prefix), len(text)), spans)
        assert np.allclose(weights @ np.maximum(scores, 0), runtime, atol=1e-6)
    # an empty span scores 0; a span outside every token scores 0
    assert not candidate_token_weights(encoding.offsets, [(3, 3)], len(prefix), len(text)).any()


@pytest.fixture(scope="module")
def tiny_trained(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from tiny_models import make_tiny_bert

    from keyatten_lite_export.qk_train import train_qk_adapter

    root = tmp_path_factory.mktemp("qk-train")
    base = make_tiny_bert(root / "bert", layers=4)
    # Keywords that recur across documents at different positions: learnable from the q/k of one layer.
    docs = [
        {"text": "graph neural networks learn representations of nodes", "keywords": ["graph"]},
        {"text": "the transformer encoder attends over every token pair and graph data", "keywords": ["graph"]},
        {"text": "keyword extraction ranks words by the attention they receive", "keywords": ["attention"]},
        {"text": "beijing is the capital of china and attention is all you need", "keywords": ["attention"]},
        {"text": "nodes of a graph receive attention from the keyword", "keywords": ["graph", "attention"]},
    ] * 4
    recipe = {
        "name": "qk-tiny", "language": "en", "backbone": "tiny", "max_length": 64,
        "training": {"epochs": 6, "lr": 0.01, "rank": 4, "temperature": 0.1, "seed": 0, "torch_threads": 1},
    }
    log = train_qk_adapter(recipe, base, root / "adapter", docs=docs)
    again = train_qk_adapter(recipe, base, root / "again", docs=docs)
    return {"base": base, "adapter": root / "adapter", "again": root / "again", "log": log, "docs": docs, "root": root}


def test_training_lowers_the_loss_and_is_reproducible(tiny_trained):
    from keyatten_lite_export.csa import adapter_max_abs_diff

    log = tiny_trained["log"]
    assert log["docs_with_a_positive"] == len(tiny_trained["docs"]) and log["read_layer"] == 3
    assert log["loss_last_100"] < log["loss_first_100"]
    assert adapter_max_abs_diff(tiny_trained["adapter"], tiny_trained["again"]) == 0.0
    config = json.loads((tiny_trained["adapter"] / "adapter_config.json").read_text(encoding="utf-8"))
    assert sorted(config["target_modules"]) == ["encoder.layer.3.attention.self.key", "encoder.layer.3.attention.self.query"]
    assert config["base_model_name_or_path"] == "tiny" and not (tiny_trained["adapter"] / "README.md").exists()


def test_the_exported_adapter_ranks_gold_higher_at_run_time(tiny_trained):
    """The trained adapter, merged and exported, ranks the gold keywords higher than zero-shot."""
    from keyatten_lite.extractors.qk_lora import QKLoRAExtractor
    from keyatten_lite_export.qk import export_qk_bundle

    root = tiny_trained["root"]
    export_qk_bundle(tiny_trained["base"], root / "zero", name="zero", max_length=64)
    manifest = export_qk_bundle(tiny_trained["base"], root / "trained", adapter=tiny_trained["adapter"], name="trained", max_length=64)
    assert manifest["parity"]["fp32"]["reference"]["max_abs_diff"] <= 1e-4  # vs base + the unmerged adapter

    def gold_rank(bundle):
        extractor = QKLoRAExtractor(str(bundle), language="en")
        ranks = []
        for doc in tiny_trained["docs"][:5]:
            ranked = extractor.extract_keywords(doc["text"], top_k=50)
            ranks += [ranked.index(k) for k in doc["keywords"]]
        return float(np.mean(ranks))

    assert gold_rank(root / "trained") < gold_rank(root / "zero")


def test_the_trained_bundle_is_the_default_of_its_language(tiny_trained, tmp_path, monkeypatch):
    import shutil

    from keyatten_lite.errors import InvalidArgumentError
    from keyatten_lite.extractors.qk_lora import QKLoRAExtractor
    from keyatten_lite.model.registry import default_qk_bundle_for

    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(tmp_path / "empty"))
    assert default_qk_bundle_for("en") is None
    with pytest.raises(InvalidArgumentError, match="models build"):
        QKLoRAExtractor(language="en")
    home = tmp_path / "home"
    trained = tiny_trained["root"] / "trained"
    if not trained.is_dir():
        pytest.skip("needs the exported bundle of the previous test")
    shutil.copytree(trained, home / "bundles" / "qk-minilm-en")
    monkeypatch.setenv("KEYATTEN_LITE_HOME", str(home))
    assert default_qk_bundle_for("en-GB") == "qk-minilm-en" and default_qk_bundle_for("zh") is None
    assert QKLoRAExtractor(language="en").bundle.path == home / "bundles" / "qk-minilm-en"


def test_qk_recipes_are_refused_when_incomplete():
    from keyatten_lite_export import ExportError
    from keyatten_lite_export.qk_train import qk_recipe_source
    from keyatten_lite_export.sources import load_recipe

    full = qk_recipe_source(load_recipe("qk-e5-small-zh"))
    assert full["source"] == load_recipe("e5-small-zh")["source"] and full["kind"] == "qk"
    with pytest.raises(ExportError, match="lacks"):
        qk_recipe_source(dict(load_recipe("qk-e5-small-zh"), training={"epochs": 1}))
    with pytest.raises(ExportError, match="not a QK recipe"):
        qk_recipe_source(load_recipe("csa-e5-small-zh"))


@pytest.mark.parametrize("name", ["qk-e5-small-zh", "qk-minilm-en"])
def test_built_qk_bundle_was_retrained_to_the_shipped_adapter(name):
    """CI's check: `models build` retrains the QK adapter when the data is present and records how far it
    lies from models/adapters/<name>; the bundle must be within the stated tolerance."""
    from conftest import default_bundle_path

    from keyatten_lite_export.csa import ADAPTER_TOLERANCE

    path = default_bundle_path(name)
    manifest = json.loads((path / "bundle.json").read_text(encoding="utf-8"))
    qk = manifest["qk"]
    assert manifest["kind"] == "qk" and manifest["exported_layers"] == [qk["layer"]]
    assert manifest["parity"]["fp32"]["reference"]["max_abs_diff"] <= 1e-4
    origin = qk["trained"]
    if origin["source"] != "trained here":
        pytest.skip("built from the shipped adapter (no training data here)")
    check = origin["shipped_adapter"]
    assert check["tolerance"] == ADAPTER_TOLERANCE
    # Weights within ADAPTER_TOLERANCE on the training machine's CPU; elsewhere the trajectory (csa.py).
    assert check["within_tolerance"], check
    if check["max_abs_diff"] > ADAPTER_TOLERANCE:
        assert check["by"] == "training trajectory", check
        assert all(v["within"] for k, v in check["trajectory"].items() if k != "steps"), check
