"""BIO tagging (keyatten 0.3.1 §7): numpy Viterbi, span rules, relaxed decoding, profiles, the BIO
bundle export on a tiny random BERT, and (slow) the trained default BIO bundles when built.

References are brute force over every tag sequence, the torch CRF, and the spec's rules.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from keyatten_lite.scoring.bio_decode import (
    PROFILES,
    TAG_B,
    TAG_I,
    TAG_O,
    bio_tags_to_spans,
    clean_scored_spans,
    clean_span_text,
    dedup_lower,
    mine_recall_oriented_phrases,
    owned_span_range,
    profile_parameters,
    relaxed_token_spans,
    relaxed_window_scores,
    softmax,
    span_text,
    span_variants,
    spans_to_text,
    viterbi_decode,
)
from keyatten_lite.errors import BundleError, InvalidArgumentError

B, I, O = TAG_B, TAG_I, TAG_O


def path_score(tags, emissions, start, end, transitions) -> float:
    score = start[tags[0]] + emissions[0, tags[0]]
    for t in range(1, len(tags)):
        score += transitions[tags[t - 1], tags[t]] + emissions[t, tags[t]]
    return score + end[tags[-1]]


def random_crf(rng, length, n_tags=3):
    return (
        rng.normal(size=(length, n_tags)),
        rng.normal(size=n_tags),
        rng.normal(size=n_tags),
        rng.normal(size=(n_tags, n_tags)),
    )


# ------------------------------------------------------------------------------------- Viterbi


def test_viterbi_matches_brute_force_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(200):
        length = int(rng.integers(1, 7))
        emissions, start, end, transitions = random_crf(rng, length)
        best = max(
            itertools.product(range(3), repeat=length),
            key=lambda tags: path_score(tags, emissions, start, end, transitions),
        )
        assert viterbi_decode(emissions, start, end, transitions) == list(best)


def test_viterbi_ties_go_to_the_first_index():
    # All scores equal: torch max (and numpy argmax) pick index 0 everywhere.
    zeros = np.zeros((4, 3))
    assert viterbi_decode(zeros, np.zeros(3), np.zeros(3), np.zeros((3, 3))) == [0, 0, 0, 0]


def test_viterbi_rejects_mismatched_scores():
    with pytest.raises(InvalidArgumentError):
        viterbi_decode(np.zeros((3, 3)), np.zeros(2), np.zeros(3), np.zeros((3, 3)))
    with pytest.raises(InvalidArgumentError):
        viterbi_decode(np.zeros((0, 3)), np.zeros(3), np.zeros(3), np.zeros((3, 3)))


def test_viterbi_matches_torch_crf_and_likelihood_matches_brute_force():
    torch = pytest.importorskip("torch")
    from keyatten_lite_export.bio import crf_log_likelihood, crf_viterbi

    rng = np.random.default_rng(1)
    lengths = [5, 3, 1, 4]
    emissions = rng.normal(size=(len(lengths), 5, 3)).astype(np.float32)
    start, end, transitions = (rng.normal(size=s).astype(np.float32) for s in (3, 3, (3, 3)))
    mask = np.zeros((len(lengths), 5), dtype=bool)
    for row, n in enumerate(lengths):
        mask[row, :n] = True
    t = {k: torch.from_numpy(v) for k, v in dict(e=emissions, s=start, n=end, tr=transitions).items()}
    paths = crf_viterbi(t["e"], torch.from_numpy(mask), t["s"], t["n"], t["tr"])
    for row, n in enumerate(lengths):
        assert paths[row] == viterbi_decode(emissions[row, :n], start, end, transitions)
    tags = rng.integers(0, 3, size=(len(lengths), 5))
    got = crf_log_likelihood(t["e"], torch.from_numpy(tags), torch.from_numpy(mask), t["s"], t["n"], t["tr"])
    for row, n in enumerate(lengths):
        e = emissions[row, :n].astype(np.float64)
        scores = [path_score(p, e, start, end, transitions) for p in itertools.product(range(3), repeat=n)]
        log_z = np.log(np.sum(np.exp(scores)))
        expected = path_score(tags[row, :n], e, start, end, transitions) - log_z
        assert float(got[row]) == pytest.approx(expected, abs=1e-4)


# ---------------------------------------------------------------------------------- span rules


def test_bio_tags_to_spans_rules():
    assert bio_tags_to_spans([O, B, I, O, B, B, I]) == [(1, 3), (4, 5), (5, 7)]
    assert bio_tags_to_spans([O, I, I, O]) == [(1, 3)]  # I without B opens a span
    assert bio_tags_to_spans([B, O, I]) == [(0, 1), (2, 3)]  # open at the end is closed
    assert bio_tags_to_spans([O, O]) == []


def test_spans_to_text_rules():
    text = "deep learning models"
    # [CLS] deep learning models [SEP]
    offsets = [(0, 0), (0, 4), (5, 13), (14, 20), (0, 0)]
    assert span_text(text, offsets, 1, 3) == "deep learning"
    assert span_text(text, offsets, 0, 2) == "deep"  # starts on [CLS]: character 0
    assert span_text(text, offsets, 0, 3) == "deep learning"
    assert span_text(text, offsets, 2, 5) is None  # ends on [SEP]: end offset 0, dropped
    assert span_text(text, offsets, 5, 6) is None  # starts past the last token
    assert spans_to_text(text, offsets, [(1, 2), (3, 5), (3, 4)]) == ["deep", "models"]
    assert dedup_lower(["Deep", "models", "deep", "MODELS", "x"]) == ["Deep", "models", "x"]


# ------------------------------------------------------------------------------------- relaxed


def probs_to_logits(probs):
    return np.log(np.asarray(probs, dtype=np.float64))


def test_relaxed_token_spans_follow_the_scan_rule():
    probs = np.array(
        [
            [0.05, 0.05, 0.90],  # 0 below threshold
            [0.60, 0.10, 0.30],  # 1 B > 0.15: span starts
            [0.10, 0.60, 0.30],  # 2 I > O: extends
            [0.10, 0.30, 0.60],  # 3 I < O: stops
            [0.20, 0.50, 0.30],  # 4 B 0.2 > 0.15: new span (the scan resumed at 3)
        ]
    )
    spans = relaxed_token_spans(probs, 0.15, viterbi_spans=[(1, 3)])
    assert [(a, b) for a, b, _ in spans] == [(1, 3), (4, 5)]
    assert spans[0][2] == pytest.approx((0.60 + 0.60) / 2 + 1.0)  # equals a Viterbi span: +1
    assert spans[1][2] == pytest.approx(0.20)
    assert [(a, b) for a, b, _ in relaxed_token_spans(probs, 0.5)] == [(1, 3)]


def test_span_variants_penalties_and_order():
    variants = span_variants(2, 4, 10, max_expand_steps=1, max_subspan_width=0)
    assert variants[0] == (0.0, 2, 4)
    assert {(a, b): p for p, a, b in variants} == pytest.approx(
        {(2, 4): 0.0, (1, 4): 0.08, (2, 5): 0.08, (1, 5): 0.12}
    )
    with_sub = {(a, b): p for p, a, b in span_variants(2, 5, 6, max_expand_steps=1, max_subspan_width=2)}
    assert with_sub[(2, 3)] == pytest.approx(0.08) and with_sub[(3, 5)] == pytest.approx(0.04)
    assert (2, 5) in with_sub and (2, 6) in with_sub and (1, 6) in with_sub
    assert all(b - a <= 2 for (a, b) in with_sub if 2 <= a and b <= 5 and (a, b) != (2, 5))
    # Kept inside the window: no variant starts before 0 or ends past n.
    assert {(a, b) for _, a, b in span_variants(0, 2, 2, 2)} == {(0, 2)}
    penalties = [v[0] for v in span_variants(1, 4, 8, 2, 3)]
    assert penalties == sorted(penalties)


def test_relaxed_window_scores_hand_made():
    text = "graph neural networks"
    offsets = [(0, 0), (0, 5), (6, 12), (13, 21), (0, 0)]
    probs = np.array(
        [
            [0.01, 0.01, 0.98],
            [0.90, 0.05, 0.05],
            [0.05, 0.90, 0.05],
            [0.10, 0.20, 0.70],
            [0.01, 0.01, 0.98],
        ]
    )
    emissions = probs_to_logits(probs)
    crf = (np.zeros(3), np.zeros(3), np.zeros((3, 3)))  # Viterbi = per-token argmax: B I O
    merged = relaxed_window_scores(text, offsets, emissions, crf, [0.15, 0.0], max_spans=10, max_expand_steps=1)
    scores = {key: score for key, (_, score) in merged.items()}
    assert scores["graph neural"] == pytest.approx(2.0)  # the Viterbi span's text
    # Relaxed at threshold 0: spans (1,3) (conf 0.9 + 1.0) and, from token 3, P_B 0.1 > 0: (3,4).
    assert scores["networks"] == pytest.approx(0.10 - 1e-3)
    # Right extension of (1,3) by one token: penalty 0.08, from threshold index 0.
    assert scores["graph neural networks"] == pytest.approx(1.9 - 0.08)
    # Left extension onto [CLS] starts at character 0 too: same text, kept once.
    assert len([k for k in merged if k == "graph neural"]) == 1
    # max_spans stops the scan per (window, threshold) call.
    few = relaxed_window_scores(text, offsets, emissions, crf, [0.15], max_spans=1)
    assert set(few) == {"graph neural"}
    # The stride index lowers everything by 1e-4 per step.
    later = relaxed_window_scores(text, offsets, emissions, crf, [0.15], stride_index=2, max_spans=10)
    assert later["graph neural"][1] == pytest.approx(2.0 - 2e-4)


def test_softmax_rows_sum_to_one():
    values = np.random.default_rng(0).normal(size=(5, 3)) * 30
    np.testing.assert_allclose(softmax(values).sum(axis=1), 1.0)


# ------------------------------------------------------------------------------------ profiles


def test_profile_parameter_tables():
    assert profile_parameters(" CLEAN ") == PROFILES["clean"]
    clean, balanced, high = PROFILES["clean"], PROFILES["balanced"], PROFILES["high_recall"]
    assert (clean["max_spans"], clean["window_strides"], clean["threshold_schedule"]) == (80, (64, 128), (0.15, 0.10, 0.05))
    assert (clean["max_expand_steps"], clean["max_subspan_width"], clean["clean"]) == (1, 0, True)
    assert (balanced["max_spans"], balanced["window_strides"], balanced["max_subspan_width"]) == (120, (64, 128), 2)
    assert balanced["threshold_schedule"] == (0.15, 0.10, 0.05) and not balanced["clean"]
    assert (high["max_spans"], high["window_strides"], high["max_subspan_width"]) == (200, (64, 128, 192), 6)
    assert high["threshold_schedule"] == (0.15, 0.10, 0.05, 0.0)
    assert profile_parameters("anything-else") == balanced
    with pytest.raises(InvalidArgumentError):
        profile_parameters(None)


def test_clean_span_text_rules():
    assert clean_span_text("《量子计算》") == "量子计算"
    assert clean_span_text("的深度学习了") == "深度学习"
    assert clean_span_text("，在图神经网络中。") == "图神经网络"
    assert clean_span_text("聊深度学习") == "深度学习"  # leading verb-like character
    assert clean_span_text("神经网络这") == "神经网络"  # trailing fragment
    assert clean_span_text("用户") == "用户"  # verbs only dropped while longer than 2
    assert clean_span_text("的") == "的"  # function characters only dropped while longer than 1
    cleaned = clean_scored_spans([("的", 3.0), ("网", 2.0), ("x", 1.5), ("深度学习", 1.0), ("深度学习的", 1.2), ("", 0.5)])
    assert cleaned == [("x", 1.5), ("深度学习", 1.2)]


def test_mined_phrases_properties():
    pytest.importorskip("jieba")
    text = "本文提出了一种基于深度学习的图像分割方法，利用卷积神经网络提取特征，并在医学图像数据集上验证了有效性。"
    phrases = mine_recall_oriented_phrases(text, "zh", max_phrases=50)
    assert phrases, "noun-headed phrases expected"
    assert all(p in text and 2 <= len(p) <= 16 for p in phrases)
    assert len({p.lower() for p in phrases}) == len(phrases)
    assert mine_recall_oriented_phrases(text, "zh", max_phrases=2) == phrases[:2]
    assert mine_recall_oriented_phrases("graph neural networks", "en") == []


def test_owned_ranges_partition_the_text():
    # Windows of 10 content tokens overlapping by 4: starts at 0, 6, 12, 18 (last shorter).
    stride, sizes = 4, [10, 10, 10, 7]
    starts = [0, 6, 12, 18]
    owner = {}
    for k, (size, first) in enumerate(zip(sizes, starts)):
        lo, hi = owned_span_range(k, len(sizes), size, stride)
        for p in range(max(lo, 0), min(hi, size)):
            assert first + p not in owner
            owner[first + p] = k
    assert sorted(owner) == list(range(25))
    assert owned_span_range(0, 1, 5, 4) == (-1, 6)  # a single window owns everything, [CLS] included


# ------------------------------------------------------------------- export on a tiny random BERT

TINY_TEXTS = [
    "graph neural networks learn representations of nodes",
    "深度学习模型在自然语言处理任务中取得了显著进展",
    "keyword extraction ranks words by attention",
    "attention",
]
TINY_CORPUS = TINY_TEXTS + ["the transformer encoder attends over every token pair", "量子计算利用叠加和纠缠"]


def make_tiny_bert(directory: Path, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel

    directory.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # A vocabulary built by hand, not by WordPieceTrainer: the trainer numbers its pieces in hash order,
    # which changes from process to process, and with it every test that reads this model's outputs.
    words = sorted({w for text in TINY_CORPUS for w, _ in tokenizer.pre_tokenizer.pre_tokenize_str(
        tokenizer.normalizer.normalize_str(text))})
    chars = sorted({c for w in words for c in w})
    vocab = specials + chars + [f"##{c}" for c in chars] + [w for w in words if len(w) > 1]
    tokenizer.model = models.WordPiece(vocab={piece: i for i, piece in enumerate(vocab)}, unk_token="[UNK]")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "BertTokenizerFast",
                "do_lower_case": True,
                "model_max_length": 128,
                **{f"{k}_token": f"[{k.upper()}]" for k in ("cls", "sep", "pad", "unk", "mask")},
            }
        )
    )
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.5,
        pad_token_id=0,
    )
    import torch

    torch.manual_seed(seed)
    BertModel(config).eval().save_pretrained(str(directory))
    return directory


def tiny_head(hidden: int = 32, seed: int = 0):
    from keyatten_lite_export.bio import BIOHead

    rng = np.random.default_rng(seed)
    return BIOHead(
        weight=(rng.normal(size=(3, hidden)) * 0.8).astype(np.float32),
        bias=np.array([0.0, 0.3, 0.5], dtype=np.float32),
        start=rng.normal(size=3).astype(np.float32),
        end=rng.normal(size=3).astype(np.float32),
        transitions=rng.normal(size=(3, 3)).astype(np.float32),
        training={"seed": seed, "note": "random head for tests"},
    )


@pytest.fixture(scope="module")
def tiny_bio(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("onnx")
    from keyatten_lite_export.bio import export_bio_bundle

    root = tmp_path_factory.mktemp("bio")
    model_dir = make_tiny_bert(root / "tiny-bert")
    head = tiny_head()
    manifest = export_bio_bundle(model_dir, root / "bio-tiny", head, name="bio-tiny", int8=True, extra_manifest={"language": "en"})
    return model_dir, root / "bio-tiny", head, manifest


def torch_reference(model_dir: Path, head, text: str, max_length: int = 128):
    """Spans and attentions straight from transformers + the torch CRF (not the export wrapper)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import BertModel

    from keyatten_lite_export.bio import crf_viterbi

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    encoding = tokenizer.encode(text)
    model = BertModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    ids = torch.tensor([encoding.ids])
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
        emissions = out.last_hidden_state @ torch.from_numpy(head.weight).T + torch.from_numpy(head.bias)
        (path,) = crf_viterbi(
            emissions, torch.ones_like(ids), *(torch.from_numpy(x) for x in (head.start, head.end, head.transitions))
        )
    spans = dedup_lower(spans_to_text(text, encoding.offsets, bio_tags_to_spans(path)))
    attentions = torch.stack([a.mean(dim=1)[0] for a in out.attentions]).numpy()
    return spans, attentions, emissions[0].numpy()


def test_tiny_bio_bundle_manifest_and_files(tiny_bio):
    _, bundle_dir, head, manifest = tiny_bio
    files = sorted(p.name for p in bundle_dir.iterdir())
    assert files == ["bundle.json", "model.int8.onnx", "model.onnx", "tokenizer.json"]  # no pickle anywhere
    assert all(not name.endswith((".pt", ".pkl", ".bin", ".pickle")) for name in files)
    assert manifest["kind"] == "bio-tagger"
    assert [o["name"] for o in manifest["graph"]["outputs"]] == ["attentions", "emissions"]
    assert manifest["bio"]["tags"] == ["B", "I", "O"]
    np.testing.assert_array_equal(np.asarray(manifest["bio"]["transitions"], dtype=np.float32), head.transitions)
    assert manifest["parity"]["fp32"]["emissions"]["max_abs_diff"] <= 1e-4
    assert manifest["parity"]["fp32"]["max_abs_diff"] <= 1e-4
    assert "emissions" in manifest["parity"]["int8"]
    json.loads((bundle_dir / "bundle.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))


def test_tiny_bio_spans_equal_torch_decoding(tiny_bio):
    from keyatten_lite.extractors.bio_tagger import BIOExtractor

    model_dir, bundle_dir, head, _ = tiny_bio
    extractor = BIOExtractor(bundle_dir)
    references = [torch_reference(model_dir, head, text) for text in TINY_TEXTS]
    assert sum(len(spans) for spans, _, _ in references) >= 3  # the random head really tags spans
    for text, (spans, attentions, emissions) in zip(TINY_TEXTS, references):
        assert extractor.extract_spans(text) == spans
        run = extractor.run(text)
        assert run.spans == spans and run.n_windows == 1
        assert run.attentions.shape == attentions.shape
        assert np.abs(run.attentions - attentions).max() <= 1e-4
        assert np.abs(run.emissions - emissions).max() <= 1e-4
        assert len(run.token_offsets) == len(run.input_ids) == attentions.shape[-1]
    # One padded batch through the graph gives the same spans as one text at a time.
    assert extractor.extract_spans_batch(TINY_TEXTS + ["  "]) == [r[0] for r in references] + [[]]
    assert extractor.extract_spans("") == []


def test_bundle_run_outputs(tiny_bio):
    from keyatten_lite.model.bundle import open_bundle

    _, bundle_dir, _, _ = tiny_bio
    bundle = open_bundle(bundle_dir)
    assert bundle.kind == "bio-tagger" and bundle.output_names == ["attentions", "emissions"]
    ids = np.array([[2, 10, 11, 3], [2, 12, 3, 0]])
    mask = (ids != 0).astype(np.int64)
    both = bundle.run_outputs(ids, mask)
    assert both["emissions"].shape == (2, 4, 3)
    np.testing.assert_array_equal(both["attentions"], bundle.run_attention(ids, mask))
    assert set(bundle.run_outputs(ids, mask, ["emissions"])) == {"emissions"}
    with pytest.raises(InvalidArgumentError):
        bundle.run_outputs(ids, mask, ["logits"])


def test_long_text_windows_keep_the_tail(tiny_bio, tmp_path):
    import shutil

    from tokenizers import Tokenizer

    from keyatten_lite.extractors.bio_tagger import BIOExtractor

    _, bundle_dir, _, _ = tiny_bio
    # CRF scores that make Viterbi tag every token B: every token is then its own span, so the
    # expected output is known from the tokenizer alone (bundle.json is not in the checksum table).
    all_b = tmp_path / "all-b"
    shutil.copytree(bundle_dir, all_b)
    manifest = json.loads((all_b / "bundle.json").read_text())
    manifest["bio"]["start"] = [100.0, 0.0, 0.0]
    manifest["bio"]["end"] = [100.0, 0.0, 0.0]
    manifest["bio"]["transitions"] = [[100.0, 0.0, 0.0]] * 3
    (all_b / "bundle.json").write_text(json.dumps(manifest))

    text = " ".join(TINY_TEXTS[:3] * 3) + " quantum zebra 42"
    tokenizer = Tokenizer.from_file(str(all_b / "tokenizer.json"))
    encoding = tokenizer.encode(text)
    expected = dedup_lower(text[a:b].strip() for a, b in encoding.offsets if b > a)
    assert len(encoding.ids) > 3 * 24  # several windows of 24 tokens

    for stride in (0, 5, 8):
        extractor = BIOExtractor(all_b, max_length=24, window_stride=stride)
        assert extractor.extract_spans(text) == expected  # nothing lost, nothing doubled, text order
        assert extractor.run(text).n_windows > 3
    assert {"quantum", "zebra", "42"} <= set(expected)
    # A single truncated window (0.3.1) loses the tail.
    short = BIOExtractor(all_b, max_length=24)
    first = short.run(text)
    tags = viterbi_decode(first.emissions, *short.crf)
    single = dedup_lower(spans_to_text(text, first.token_offsets, bio_tags_to_spans(tags)))
    assert "zebra" not in single and len(single) < len(expected)


def test_relaxed_and_profiles_on_the_tiny_bundle(tiny_bio):
    from keyatten_lite.extractors.bio_tagger import BIOExtractor

    _, bundle_dir, _, _ = tiny_bio
    extractor = BIOExtractor(bundle_dir)
    text = TINY_TEXTS[0]
    viterbi = extractor.extract_spans(text)
    relaxed = extractor.extract_spans_relaxed(text, max_spans=50)
    scores = dict(relaxed)
    assert all(scores[s] >= 2.0 - 1e-9 for s in viterbi)  # Viterbi texts carry confidence 2.0
    assert [s for _, s in relaxed] == sorted((s for _, s in relaxed), reverse=True)
    assert len(extractor.extract_spans_relaxed(text, max_spans=2)) <= 2
    assert all(piece in text for piece, _ in relaxed)
    for profile in ("clean", "balanced", "high_recall"):
        result = extractor.extract_spans_profile(text, profile=profile)
        assert len(result) <= PROFILES[profile]["max_spans"]
        assert all(isinstance(p, str) and p for p, _ in result)
    assert extractor.extract_spans_relaxed("   ") == []
    with pytest.raises(InvalidArgumentError):
        extractor.extract_spans_relaxed(text, window_strides=[-1])
    # A stride too long for the window is lowered, not refused (profiles use up to 192).
    assert extractor.extract_spans_relaxed(text, window_strides=[500]) == extractor.extract_spans_relaxed(
        text, window_strides=[125]
    )
    with pytest.raises(InvalidArgumentError):
        extractor.extract_spans_relaxed(text, max_spans=0)


def test_non_bio_and_malformed_bundles_are_rejected(tiny_bio, tmp_path):
    import shutil

    from keyatten_lite.extractors.bio_tagger import BIOExtractor

    _, bundle_dir, _, _ = tiny_bio
    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    manifest = json.loads((broken / "bundle.json").read_text())
    manifest["bio"]["transitions"] = [[0.0, 1.0]]
    (broken / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="malformed 'bio'"):
        BIOExtractor(broken)
    manifest["kind"] = "attention"
    (broken / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not a BIO bundle"):
        BIOExtractor(broken)


# ------------------------------------------------------------------------------ labels, recipes


def test_keyword_spans_and_token_labels():
    pytest.importorskip("torch")
    from keyatten_lite_export.bio import gold_present, keyword_char_spans, span_prf, token_labels

    text = "Neural networks and deep neural\n\tnetworks; networking is not a network."
    spans = keyword_char_spans(text, ["neural networks", "networks", "network", "deep neural networks"])
    assert [text[a:b] for a, b in spans] == ["Neural networks", "deep neural\n\tnetworks", "network"]
    offsets = [(0, 0), (0, 6), (7, 15), (16, 19), (0, 0)]
    assert token_labels(offsets, [(0, 15)]).tolist() == [O, B, I, O, O]
    assert token_labels([(0, 0), (0, 1), (0, 2), (2, 4)], [(0, 2)]).tolist() == [O, B, I, O]
    assert gold_present(text, ["Deep Neural Networks", "graphs"]) == ["deep neural networks"]
    figures = span_prf([["Deep neural  networks", "x"]], [["deep neural networks", "y"]])
    assert (figures["precision"], figures["recall"], figures["hits"]) == (0.5, 0.5, 1)


def test_bio_recipes_reuse_the_backbone_sources():
    from keyatten_lite_export import sources

    for name, backbone, language in (("bio-e5-small-zh", "e5-small-zh", "zh"), ("bio-minilm-en", "minilm-l6-en", "en")):
        recipe = sources.load_recipe(name)
        assert recipe["kind"] == "bio" and recipe["default"] is True and recipe["language"] == language
        assert recipe["int8"] is False  # the int8 BIO graph changes too many Viterbi paths (docs/bio.md)
        assert recipe["training"]["train_threads"] == 1 and recipe["training"]["features"] == "onnx"
        assert recipe["backbone"] == backbone
        assert recipe["source"] == sources.load_recipe(backbone)["source"]
        assert recipe["training"]["seed"] == 0 and recipe["training"]["dev_docs"] == 100
    assert sources.load_recipe("bio-minilm-en")["training"]["exclude_first"] == 500


def test_onnx_features_equal_torch_features_and_the_head_trains(tiny_bio, tmp_path):
    from keyatten_lite_export.bio import encode_documents, onnx_hidden_states, torch_hidden_states, train_head
    from keyatten_lite_export.encoder import load_encoder

    model_dir = tiny_bio[0]
    model, _, _ = load_encoder(model_dir)
    docs = [{"text": t, "keywords": ["neural networks", "attention", "自然语言处理"]} for t in TINY_CORPUS]
    by_torch = encode_documents(model, model_dir / "tokenizer.json", docs, 64, batch_size=4, hidden_states=torch_hidden_states(model))
    by_onnx = encode_documents(model, model_dir / "tokenizer.json", docs, 64, batch_size=4, hidden_states=onnx_hidden_states(model, tmp_path, 1))
    for a, b in zip(by_torch, by_onnx):
        assert a.hidden.shape == b.hidden.shape and np.abs(a.hidden - b.hidden).max() <= 1e-4
        assert a.labels.tolist() == b.labels.tolist()
    assert sum(int((d.labels != O).sum()) for d in by_onnx) >= 3
    head = train_head(by_onnx, by_onnx[:2], epochs=3, batch_size=2)
    assert len(head.training["loss_per_epoch"]) == 3 and all(np.isfinite(head.training["loss_per_epoch"]))
    assert head.weight.shape == (3, 32) and np.all(np.isfinite(head.transitions))


def test_default_build_skips_bio_without_data_or_shipped_head(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    from keyatten_lite_export import ExportError, bio, build, sources

    monkeypatch.setenv("KEYATTEN_LITE_DATA", str(tmp_path / "no-data"))
    monkeypatch.setattr(bio, "heads_dir", lambda: tmp_path / "no-heads")
    bio_recipes = [sources.load_recipe("bio-minilm-en"), sources.load_recipe("bio-e5-small-zh")]
    monkeypatch.setattr(build, "selected_recipes", lambda names=None: bio_recipes)
    messages = []
    results = build.build_default_bundles(home=tmp_path / "home", log=messages.append)
    assert [r["status"] for r in results] == ["skipped (no training data)"] * 2
    assert all("no training data" in m and "KEYATTEN_LITE_DATA" in m for m in messages)
    assert not any((tmp_path / "home" / "bundles").iterdir())
    with pytest.raises(ExportError, match="not found"):  # asked for by name: an error, not a skip
        build.build_default_bundles(home=tmp_path / "home", names=["bio-minilm-en"])


# ------------------------------------------------------------------- shipped heads (models/heads)


def tiny_recipe(model_dir: Path) -> dict:
    return {
        "name": "bio-tiny",
        "kind": "bio",
        "language": "en",
        "backbone": "tiny-bert",
        "int8": False,
        "max_length": 64,
        "source": {"kind": "hub", "model_id": "test/tiny-bert"},
        "training": {"dataset": "en/tiny.jsonl", "order": "file", "exclude_first": 0, "dev_docs": 2, "max_length": 64,
                     "seed": 0, "epochs": 2, "lr": 0.03, "batch_size": 2, "torch_threads": 1, "train_threads": 1,
                     "features": "onnx"},
    }


@pytest.fixture()
def tiny_build(tiny_bio, tmp_path, monkeypatch):
    """The tiny BERT as the recipe source, a scratch heads folder, home and data folder."""
    from keyatten_lite_export import bio, sources

    model_dir = tiny_bio[0]
    monkeypatch.setattr(sources, "prepare", lambda recipe, work, **kw: {"model_dir": str(model_dir), "model_id": "test/tiny-bert", "origin": "test"})
    monkeypatch.setattr(bio, "heads_dir", lambda: tmp_path / "heads")
    data = tmp_path / "data"
    (data / "en").mkdir(parents=True)
    docs = [{"id": f"t/{i}", "text": t, "keywords": ["neural networks", "attention", "自然语言处理"]} for i, t in enumerate(TINY_CORPUS * 2)]
    (data / "en" / "tiny.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return model_dir, tiny_recipe(model_dir), data


def test_build_from_a_shipped_head_without_data(tiny_bio, tiny_build, tmp_path, monkeypatch):
    from keyatten_lite.extractors.bio_tagger import BIOExtractor
    from keyatten_lite_export import bio, build

    model_dir, recipe, _ = tiny_build
    head = tiny_head()
    path = bio.write_head(head, recipe)
    assert path == tmp_path / "heads" / "bio-tiny.json"
    doc = json.loads(path.read_text())  # plain JSON, float32 weights exactly
    assert doc["format"] == "keyatten-lite-bio-head" and doc["training_sha256"] == bio.training_sha256(recipe)
    back = bio.read_head(path, recipe)
    for key in ("weight", "bias", "start", "end", "transitions"):
        np.testing.assert_array_equal(getattr(back, key), getattr(head, key))
    (tmp_path / "empty-data").mkdir()  # a data folder without the training file counts as no data
    monkeypatch.setenv("KEYATTEN_LITE_DATA", str(tmp_path / "empty-data"))
    monkeypatch.setattr(build, "selected_recipes", lambda names=None: [recipe])
    (result,) = build.build_default_bundles(home=tmp_path / "home")
    assert result["status"] == "built" and result["head"]["source"] == "shipped head"
    extractor = BIOExtractor(result["path"])
    manifest = extractor.bundle.manifest
    assert manifest["bio"]["head"]["file"] == "models/heads/bio-tiny.json"
    np.testing.assert_array_equal(np.asarray(manifest["bio"]["transitions"], dtype=np.float32), head.transitions)
    for text in TINY_TEXTS:
        spans, _, emissions = torch_reference(model_dir, head, text, max_length=64)
        run = extractor.run(text)
        assert run.spans == spans and np.abs(run.emissions - emissions).max() <= 1e-4


def test_damaged_or_mismatched_head_files_are_refused(tiny_build, tmp_path):
    from keyatten_lite_export import ExportError, bio
    from keyatten_lite_export.bio import export_bio_bundle

    model_dir, recipe, _ = tiny_build
    path = bio.write_head(tiny_head(), recipe)
    good = json.loads(path.read_text())

    def refused(doc, match, target=recipe):
        bad = tmp_path / "bad.json"
        bad.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        with pytest.raises(ExportError, match=match):
            bio.read_head(bad, target)

    refused('{"format": "keyatten-lite-bio-head", "weig', "cannot be read as JSON")
    refused({**good, "format": "other"}, "not a keyatten-lite-bio-head file")
    edited = json.loads(json.dumps(good))
    edited["weight"][0][0] += 0.5
    refused(edited, "do not match their recorded sha256")
    refused({**good, "bias": good["bias"][:2]}, r"'bias' has shape \[2\], expected \[3\]")
    refused({**good, "transitions": [[1, 2, "x"]] * 3}, "not an array of numbers")
    refused({**good, "start": [0, float("nan"), 0]}, "non-finite")
    refused(good, "is for 'bio-tiny', not 'bio-other'", {**recipe, "name": "bio-other"})
    refused(good, "other settings", {**recipe, "training": {**recipe["training"], "seed": 1}})
    # A head for another hidden size: the export refuses it before writing anything.
    with pytest.raises(ExportError, match="hidden size 16"):
        export_bio_bundle(model_dir, tmp_path / "out", tiny_head(hidden=16), name="bio-tiny")
    assert not (tmp_path / "out").exists()


def test_retraining_with_data_is_compared_with_the_shipped_head(tiny_build, tmp_path, monkeypatch):
    from keyatten_lite_export import bio

    model_dir, recipe, data = tiny_build
    head = bio.train_bio(model_dir, recipe, data=data)
    bio.write_head(head, recipe)
    monkeypatch.setenv("KEYATTEN_LITE_DATA", str(data))
    result = bio.build_bio_bundle(recipe, tmp_path / "home")
    origin = result["head"]
    assert origin["source"] == "trained here"
    check = origin["shipped_head"]
    assert check["compared"] and check["within_tolerance"], check
    assert check["max_abs_diff"] <= bio.HEAD_TOLERANCE and check["dev_viterbi_paths_equal"] == "2/2"
    # A shipped head that disagrees is reported, not silently accepted.
    other = bio.BIOHead(**{k: getattr(head, k) + 0.01 for k in ("weight", "bias", "start", "end", "transitions")}, training=head.training)
    bio.write_head(other, recipe)
    result = bio.build_bio_bundle(recipe, tmp_path / "home", force=True)
    assert result["head"]["shipped_head"]["within_tolerance"] is False


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bio-minilm-en", "bio-e5-small-zh"])
def test_retrained_default_head_matches_the_shipped_head(name, tmp_path):
    """CI's check: retraining on the data reproduces models/heads/<name>.json within the stated tolerance."""
    pytest.importorskip("torch")
    from conftest import data_dir, default_bundle_path

    from keyatten_lite_export import bio, sources

    default_bundle_path(name)  # CI's check runs where the default bundles are built
    recipe = sources.load_recipe(name)
    if not (data_dir() / recipe["training"]["dataset"]).exists():
        pytest.skip(f"evaluation data not found at {data_dir()} (set KEYATTEN_LITE_DATA)")
    shipped = bio.read_head(bio.shipped_head_path(name), recipe)
    info = sources.prepare(recipe, tmp_path)
    head = bio.train_bio(info["model_dir"], recipe, data=data_dir())
    assert head.training["split"]["dataset_sha256"] == shipped.training["split"]["dataset_sha256"]
    check = bio.compare_heads(head, shipped, head.training["_dev_encoded"])
    assert check["within_tolerance"], check
    assert head.training["dev"]["f1"] == pytest.approx(shipped.training["dev"]["f1"], abs=0.01)


def test_inspec_test_documents_are_never_trained_on():
    pytest.importorskip("torch")
    from conftest import data_dir

    from keyatten_lite_export import sources
    from keyatten_lite_export.bio import load_training_split

    if not (data_dir() / "en" / "inspec.jsonl").exists():
        pytest.skip(f"evaluation data not found at {data_dir()} (set KEYATTEN_LITE_DATA)")
    spec = sources.load_recipe("bio-minilm-en")["training"]
    train, dev, record = load_training_split(spec, data_dir())
    numbers = sorted(int(line["id"].split("/")[1]) for line in map(json.loads, open(data_dir() / "en/inspec.jsonl")))
    test_ids = set(numbers[:500])
    used = [int(d["id"].split("/")[1]) for d in train + dev]
    assert not test_ids & set(used)
    assert len(dev) == 100 and len(train) + len(dev) == len(numbers) - 500
    assert record["excluded_first"] == 500


# ------------------------------------------------------------------- trained default BIO bundles


@pytest.mark.slow
@pytest.mark.parametrize("name,language", [("bio-minilm-en", "en"), ("bio-e5-small-zh", "zh")])
def test_trained_default_bio_bundles(name, language):
    from conftest import default_bundle_path, read_jsonl

    from keyatten_lite.extractors.bio_tagger import BIOExtractor

    path = default_bundle_path(name)
    extractor = BIOExtractor(path)
    manifest = extractor.bundle.manifest
    training = manifest["bio"]["training"]
    assert manifest["parity"]["fp32"]["emissions"]["max_abs_diff"] <= 1e-4
    assert extractor.language == language
    if "dev_onnx" in training:  # trained here, with the data beside the checkout
        # The ONNX decoding of the dev split scores like the torch decoding done at training time.
        assert abs(training["dev_onnx"]["f1"] - training["dev"]["f1"]) <= 0.03
    else:  # a fresh clone without the data: built from the shipped head
        assert manifest["bio"]["head"]["source"] == "shipped head"
    assert training["dev"]["f1"] > 0.2
    # The default taggers share their attention bundle's graph: only the last layer and the head here.
    assert manifest["backbone"]["bundle"] == {"en": "minilm-l6-en", "zh": "e5-small-zh"}[language]
    assert sorted(p.name for p in path.iterdir()) == ["bundle.json", "head.onnx", "tokenizer.json"]
    shared = manifest["parity"]["fp32"]["shared_backbone"]
    assert shared["emissions_max_abs_diff"] <= 1e-4 and shared["attention_max_abs_diff"] <= 1e-4
    assert len(set(shared["viterbi_paths_equal"].split("/"))) == 1
    docs = read_jsonl("en/inspec.jsonl" if language == "en" else "zh/csl_test.jsonl", limit=5)
    for doc, spans in zip(docs, extractor.extract_spans_batch([d["text"] for d in docs])):
        assert spans == extractor.extract_spans(doc["text"])
        assert all(s.lower() in doc["text"].lower() for s in spans)


def test_runtime_module_imports_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys, keyatten_lite.extractors.bio_tagger\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'onnxruntime', 'tokenizers', 'jieba')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
