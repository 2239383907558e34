"""The default profile (pipeline/default.py and the modules it uses): candidates, alignment, windows, IDF default.

Pure-function tests run everywhere; the ones that need the default bundles skip when they are not built
(set KEYATTEN_LITE_HOME to a home with ``minilm-l6-en`` / ``e5-small-zh``).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyatten_lite import KeyAttenExtractor
from keyatten_lite.model import windows
from keyatten_lite.profiles import DEFAULT
from keyatten_lite.profiles import default as profile_constants
from keyatten_lite.scoring import default as default_scoring
from keyatten_lite.text import phrases
from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.state.idf import IdfState
from keyatten_lite.text.normalize import joinable_word_key, normalize_phrase


def _bundle_or_skip(name: str):
    from keyatten_lite.model.bundle import open_bundle
    from keyatten_lite.errors import BundleError

    try:
        return open_bundle(name, intra_op_threads=1)
    except (BundleError, FileNotFoundError) as exc:
        pytest.skip(f"default bundle {name!r} is not built here ({exc}); run `keyatten-lite models build`")


# ------------------------------------------------------------------------------------------ candidates
_PUNCT = ".,;:!?()[]{}\"/"
_token = st.one_of(
    st.sampled_from(["graph", "neural", "network", "model", "data", "of", "the", "and", "3D", "state-of-the-art"]),
    st.sampled_from(list(_PUNCT)),
)


def _occurrence_texts(text: str):
    words, spans, segments = phrases.english_words(text)
    cands = phrases.build_candidate_set(words, phrases.english_valid_mask(words), segments, "en", max_ngram=4)
    for c, s, e in zip(cands.occurrence_candidate, cands.occurrence_start, cands.occurrence_end):
        yield cands, int(c), text[spans[s][0] : spans[e - 1][1]]


@settings(max_examples=150, deadline=None)
@given(st.lists(_token, min_size=1, max_size=30), st.sampled_from([" ", "\n", " \t", "  "]))
def test_candidates_never_cross_punctuation(tokens, space):
    text = space.join(tokens)
    for cands, c, covered in _occurrence_texts(text):
        # Between the first and last word of an occurrence there is only words and whitespace.
        assert not any(ch in covered for ch in _PUNCT), covered
        assert normalize_phrase(cands.texts[c]) == cands.keys[c]


def test_candidates_hand_made_text():
    text = "Graph neural networks, for example, learn graph data.\nNeural networks (deep) work"
    words, spans, segments = phrases.english_words(text)
    cands = phrases.build_candidate_set(words, phrases.english_valid_mask(words), segments, "en")
    texts = set(cands.texts)
    assert "Graph neural networks" in texts
    assert "learn graph data" in texts
    assert "data Neural" not in texts  # the full stop is a boundary ...
    assert "networks deep" not in texts  # ... and so is a bracket
    assert "learn graph data Neural" not in texts
    assert "example learn" not in texts  # the comma is a boundary
    # Every occurrence of a key is recorded: "neural networks" occurs twice (case differs).
    c = cands.keys.index(normalize_phrase("neural networks"))
    assert cands.counts[c] == 2
    # The spans are character offsets of the raw text.
    assert all(text[s:e] == w for w, (s, e) in zip(words, spans.tolist()))


def test_end_filter_drops_ly_ed_endings():
    words, _spans, segments = phrases.english_words("recently proposed methods")
    valid = phrases.english_valid_mask(words)
    kept = phrases.build_candidate_set(words, valid, segments, "en", end_filter="ly-ed").texts
    assert "recently" not in kept and "recently proposed" not in kept
    assert "recently proposed methods" in kept and "methods" in kept


# Keys of n-grams are built from per-word keys (normalize.joinable_word_key). The reference below is the
# earlier builder, which keyed every n-gram occurrence whole with normalize_phrase: both must agree.
def _reference_candidate_set(words, valid, segments, language, *, max_ngram=4, tags=None, end_filter="none"):
    valid = np.asarray(valid, dtype=bool)
    segments = np.zeros(len(words), dtype=np.int64) if segments is None else segments
    joiner = "" if language == "zh" else " "
    index, texts, keys, lengths, firsts, occurrences = {}, [], [], [], [], []
    for start in range(len(words)):
        if not valid[start]:
            continue
        for end in range(start + 1, min(len(words), start + max_ngram) + 1):
            last = end - 1
            if not valid[last] or segments[last] != segments[start]:
                break
            if not phrases._allowed_end(words[last], tags[last] if tags is not None else None, end_filter):
                continue
            phrase = joiner.join(words[start:end]).strip()
            if language == "en":
                phrase = phrase.strip("- ")
            key = normalize_phrase(phrase)
            if not key:
                continue
            if key not in index:
                index[key] = len(texts)
                texts.append(phrase)
                keys.append(key)
                lengths.append(end - start)
                firsts.append(start)
            occurrences.append((index[key], start, end))
    return texts, keys, lengths, firsts, occurrences


def _as_reference(cands):
    occurrences = list(zip(*(a.tolist() for a in (cands.occurrence_candidate, cands.occurrence_start, cands.occurrence_end))))
    return cands.texts, cands.keys, cands.n_words.tolist(), cands.first_word.tolist(), occurrences


# Hyphens, apostrophes (ASCII and ’), digits, underscores, case, accents, the Kelvin sign and dotted İ
# (lower-case to ASCII letters), final sigma, full-width letters, CJK, words without any letter or digit.
_TRICKY_WORDS = [
    "Graph", "GRAPHS", "networks", "state-of-the-art", "3D-models", "user's", "users’", "O'Neil", "don't",
    "x-ray", "2nd", "1990s", "COVID-19", "foo_bar", "_", "naïve", "Café", "Kelvin", "İstanbul", "ΣΟΦΟΣ",
    "ＧＰＵ", "数据", "GPU加速", "models数据", "-", "--", "’", "", " ", "a", "s", "ly", "classified", "quickly",
]
_tricky_word = st.one_of(st.sampled_from(_TRICKY_WORDS), st.text(alphabet="aAsS9-'’_ İKΣ数é", max_size=6))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(_tricky_word, st.booleans(), st.integers(0, 2)), max_size=14),
    st.sampled_from(["en", "zh"]),
    st.sampled_from(["none", "ly-ed"]),
    st.integers(1, 4),
)
def test_candidate_keys_equal_whole_phrase_keys(items, language, end_filter, max_ngram):
    words = [w for w, _, _ in items]
    valid = np.array([ok for _, ok, _ in items], dtype=bool)
    segments = np.cumsum([step == 2 for _, _, step in items]).astype(np.int64)
    args = dict(max_ngram=max_ngram, end_filter=end_filter)
    built = phrases.build_candidate_set(words, valid, segments, language, **args)
    assert _as_reference(built) == _reference_candidate_set(words, valid, segments, language, **args)


@pytest.mark.parametrize(
    "text",
    [
        "State-of-the-art 3D-models: the user's GRAPHS, users’ graphs and O'Neil's x-ray COVID-19 data (1990s).",
        "Naïve Café networks classified quickly; Kelvin İstanbul ΣΟΦΟΣ models, ＧＰＵ kernels and GPU加速 models.",
        "foo_bar graph__networks -- hyphen- -ated words’ end",
    ],
)
def test_candidate_keys_equal_whole_phrase_keys_on_text(text):
    words, _spans, segments = phrases.english_words(text)
    valid = phrases.english_valid_mask(words)
    for end_filter in ("none", "ly-ed"):
        built = phrases.build_candidate_set(words, valid, segments, "en", end_filter=end_filter)
        assert _as_reference(built) == _reference_candidate_set(words, valid, segments, "en", end_filter=end_filter)


def test_joinable_word_keys():
    # Joinable words: the phrase key is the concatenation of the word keys.
    for phrase in [("Graph", "networks"), ("state-of-the-art", "3D-models"), ("user's", "GRAPHS"), ("Kelvin", "İstanbul")]:
        keys = [joinable_word_key(w) for w in phrase]
        assert None not in keys
        assert "".join(keys) == normalize_phrase(" ".join(phrase))
    # Words that would break it: a CJK word switches the whole phrase to the CJK rule (no stemming), a
    # word without a letter or digit is kept as text only when nothing else is.
    assert normalize_phrase("models 数据") == "models数据" != normalize_phrase("models") + normalize_phrase("数据")
    assert normalize_phrase("graph -") == "graph" != normalize_phrase("graph") + normalize_phrase("-")
    for word in ["数据", "GPU加速", "-", "’", "", " ", "ＧＰＵ"]:
        assert joinable_word_key(word) is None
    # Chinese joins words with nothing, so "model" + "s" is one run there: never keyed per word.
    zh = phrases.build_candidate_set(["model", "s"], np.array([True, True]), None, "zh")
    pairs = [(s, e) for s, e in zip(zh.occurrence_start.tolist(), zh.occurrence_end.tolist())]
    both = zh.occurrence_candidate[pairs.index((0, 2))]
    assert zh.keys[both] == normalize_phrase("models") == "model" != joinable_word_key("model") + joinable_word_key("s")


def test_nested_contained_rule():
    cands = phrases.CandidateSet(
        texts=["neural network", "network", "graph"],
        keys=["neuralnetwork", "network", "graph"],
        n_words=np.array([2, 1, 1]),
        first_word=np.array([0, 1, 3]),
        occurrence_candidate=np.array([0, 1, 2, 1]),
        occurrence_start=np.array([0, 1, 3, 5]),
        occurrence_end=np.array([2, 2, 4, 6]),
    )
    scores = np.array([3.0, 2.0, 1.0])
    assert [t for t, _ in default_scoring.rank_candidate_set(cands, scores, 3, "none")] == ["neural network", "network", "graph"]
    # "network" also occurs on its own (2 occurrences > 1): kept by "contained", dropped by "substring".
    assert [t for t, _ in default_scoring.rank_candidate_set(cands, scores, 3, "contained")] == ["neural network", "network", "graph"]
    assert [t for t, _ in default_scoring.rank_candidate_set(cands, scores, 3, "substring")] == ["neural network", "graph"]


# ------------------------------------------------------------------------------------------ alignment
def test_word_scores_from_token_offsets_hand_made():
    word_spans = np.array([[0, 5], [6, 11], [12, 13]])
    token_offsets = np.array([[0, 3], [3, 5], [5, 6], [6, 11], [11, 12]])
    token_scores = np.array([1.0, 3.0, 10.0, 4.0, 20.0])
    assert default_scoring.word_scores_from_token_offsets(word_spans, token_offsets, token_scores, "mean").tolist() == [2.0, 4.0, 0.0]
    assert default_scoring.word_scores_from_token_offsets(word_spans, token_offsets, token_scores, "max").tolist() == [3.0, 4.0, 0.0]
    assert default_scoring.word_scores_from_token_offsets(word_spans, token_offsets, token_scores, "sum").tolist() == [4.0, 4.0, 0.0]
    # A token spanning two words counts for both; an excluded (not alignable) token counts for none.
    spanning = np.array([[0, 11]])
    assert default_scoring.word_scores_from_token_offsets(word_spans, spanning, np.array([7.0])).tolist() == [7.0, 7.0, 0.0]
    alignable = np.array([False, True, True, True, True])
    assert default_scoring.word_scores_from_token_offsets(word_spans, token_offsets, token_scores, "mean", alignable)[0] == 3.0
    with pytest.raises(InvalidArgumentError):
        default_scoring.word_scores_from_token_offsets(word_spans, token_offsets, token_scores, "median")


def test_real_tokenizer_offsets_cover_every_word():
    bundle = _bundle_or_skip("minilm-l6-en")
    text = "Separate accounts go mainstream [investment]\n\tNew entrants: state-of-the-art 3D-models."
    enc = bundle.tokenizer().encode(text, add_special_tokens=False)
    words, spans, _ = phrases.english_words(text)
    hits = default_scoring.word_scores_from_token_offsets(spans, np.asarray(enc.offsets), np.ones(len(enc.ids)), "sum")
    assert np.all(hits >= 1)  # every word is overlapped by at least one token
    # ... and the tokens of a word spell it (lower-cased by the BERT normaliser).
    for word, (s, e) in zip(words, spans.tolist()):
        pieces = [text[a:b] for a, b in enc.offsets if b > s and a < e]
        assert "".join(pieces).lower() == word.lower()


def test_sentencepiece_bare_pieces_are_not_aligned():
    bundle = _bundle_or_skip("e5-small-zh")
    (ts,) = windows.token_scores_for_texts(bundle, ["采用修正的参数 飞行器"], ["received_attn"], [bundle.layer_position(-1)])
    enc = bundle.tokenizer().encode("采用修正的参数 飞行器", add_special_tokens=False)
    bare = [t == "▁" for t in enc.tokens]
    assert any(bare)  # the tokenizer does emit them ...
    assert ts.alignable.tolist() == [not b for b in bare]  # ... and they are never aligned to a word


# ------------------------------------------------------------------------------------------ windows
@pytest.mark.parametrize("n,window,stride", [(1, 10, 5), (10, 10, 5), (11, 10, 5), (1000, 126, 94), (517, 510, 382)])
def test_window_starts_cover_the_text(n, window, stride):
    starts = windows.window_starts(n, window, stride)
    assert starts[0] == 0
    assert all(b > a for a, b in zip(starts, starts[1:]))
    assert all(b - a <= window for a, b in zip(starts, starts[1:]))  # no gap between windows
    assert min(n, starts[-1] + window) == n  # the tail is read


def test_long_text_is_read_in_bounded_windows():
    bundle = _bundle_or_skip("minilm-l6-en")
    body = " ".join(f"sentence {i} talks about graphs and networks." for i in range(120))
    text = body + " Finally the zyxwvut quasicrystal appears."
    (ts,) = windows.token_scores_for_texts(bundle, [text], ["received_attn"], [bundle.layer_position(-1)], window=64)
    n = ts.offsets.shape[0]
    assert n > 600 and ts.n_windows >= n // 62
    assert ts.max_pass_tokens <= 64
    scores = ts.scores["received_attn"][0]
    assert scores.shape == (n,) and np.all(np.isfinite(scores))
    assert np.all(scores[-10:] > 0)  # the tail was read (unread tokens would keep 0)
    tail = text.index("quasicrystal")
    assert any(s <= tail < e for s, e in ts.offsets[-10:].tolist())


def test_extractor_reaches_the_tail_of_a_long_document():
    _bundle_or_skip("minilm-l6-en")
    cfg = profile_constants.DefaultProfileConfig(window=64)
    ex = KeyAttenExtractor("minilm-l6-en", "en", intra_op_threads=1, profile=DEFAULT.with_constants(cfg), layer_indices=[-1])
    body = " ".join(f"Sentence {i} talks about graphs." for i in range(100))
    text = body + " The quasicrystal lattice. The quasicrystal lattice."
    top = ex.extract_keywords(text, "received_attn", top_k=50, with_scores=True)
    assert any("quasicrystal" in phrase for phrase, _ in top)


# ------------------------------------------------------------------------------------------ IDF
def test_unseen_idf_default():
    state = IdfState()
    state.fit_keys([{"graph", "data"}, {"graph"}, {"model"}])
    lookup = state.lookup()
    df0 = default_scoring.unseen_idf_value(lookup, state.doc_count, "df0")
    assert df0 == pytest.approx(math.log(3 + 1) + 1)
    assert df0 > max(lookup.values())
    assert default_scoring.unseen_idf_value(lookup, None, "df0") == pytest.approx(max(lookup.values()))  # N unknown
    assert default_scoring.unseen_idf_value(lookup, state.doc_count, "max") == pytest.approx(max(lookup.values()))
    assert default_scoring.unseen_idf_value(lookup, state.doc_count, "zero") == 0.0
    words = ["graph", "quasicrystal", "the"]
    values = default_scoring.idf_values(words, np.array([True, True, False]), lookup, df0)
    assert values[0] == pytest.approx(lookup["graph"]) and values[1] == df0 and values[2] == 0.0


def test_unseen_words_are_not_wiped_out():
    words, spans, segments = phrases.english_words("quasicrystal lattice and graph")
    valid = phrases.english_valid_mask(words)
    cands = phrases.build_candidate_set(words, valid, segments, "en")
    idf = default_scoring.idf_values(words, valid, {"graph": 1.5}, default_scoring.unseen_idf_value({"graph": 1.5}, 10, "df0"))
    scores = default_scoring.score_candidates(cands, np.ones(len(words)), idf, profile_constants.DefaultProfileConfig())
    assert np.all(np.isfinite(scores))
    # 0.3.1 gave unseen words tfidf 0; here the unseen "quasicrystal" outranks the common "graph".
    assert scores[cands.keys.index(normalize_phrase("quasicrystal"))] > scores[cands.keys.index("graph")]


def test_position_prior_in_units_of_position_scale():
    # "alpha" first at word 0; "omega" first at word 400 (399 filler words "x" are invalid: 1 character).
    words = ["alpha"] + ["x"] * 399 + ["omega"]
    valid = phrases.english_valid_mask(words)
    cands = phrases.build_candidate_set(words, valid, None, "en")
    word_scores = np.ones(len(words))
    flat = default_scoring.score_candidates(cands, word_scores, None, profile_constants.DefaultProfileConfig())
    prior = default_scoring.score_candidates(cands, word_scores, None,
                                profile_constants.DefaultProfileConfig(position_power=0.5, position_scale=400.0))
    a, o = cands.keys.index("alpha"), cands.keys.index("omega")
    assert flat[a] == pytest.approx(flat[o])
    assert prior[a] == pytest.approx(flat[a])  # log(1 + 0/400) = 0
    assert prior[o] == pytest.approx(flat[o] - 0.5 * math.log(2.0))  # 400 words = one unit
    with pytest.raises(InvalidArgumentError, match="position_scale"):
        profile_constants.DefaultProfileConfig(position_scale=0.0)


def _words_cands(text: str, pos_filter: str = "none"):
    words, _spans, segments = phrases.english_words(text)
    valid = phrases.english_valid_mask(words, pos_filter)
    return words, phrases.build_candidate_set(words, valid, segments, "en")


def test_adaptive_priors_follow_the_document():
    config = profile_constants.DefaultProfileConfig(
        frequency_power=1.0, frequency_power_size=-0.1, length_power=0.5, length_power_repeat=3.0,
        position_scale=50.0, position_scale_size=0.5,
    )
    # No coefficient: the fixed constants whatever the document.
    _w, cands = _words_cands("graph data graph data nodes")
    assert default_scoring.adaptive_powers(cands, 5000, profile_constants.DefaultProfileConfig(
        frequency_power=0.7, length_power=0.3, position_scale=9.0)) == (0.7, 0.3, 9.0)
    # 100 words: D = 0, so the base values; R = share of multi-word candidates that repeat.
    fp, lp, scale = default_scoring.adaptive_powers(cands, 100, config)
    repeat = float((cands.counts[cands.n_words >= 2] >= 2).mean())
    assert 0 < repeat < 1
    assert (fp, scale) == (pytest.approx(1.0), pytest.approx(50.0))
    assert lp == pytest.approx(0.5 + 3.0 * repeat)
    # A longer document: less weight on frequency, a wider position scale, smoothly (no jump).
    long_fp, _lp, long_scale = default_scoring.adaptive_powers(cands, 7600, config)
    assert long_fp == pytest.approx(1.0 - 0.1 * math.log(76.0)) and long_scale == pytest.approx(50.0 * 76.0 ** 0.5)
    near = default_scoring.adaptive_powers(cands, 7601, config)
    assert abs(near[0] - long_fp) < 1e-4 and abs(near[2] - long_scale) < 0.5
    # Nothing repeats: the length power falls back to its base; powers stay in their bounds.
    _w, single = _words_cands("graph data, nodes")
    assert default_scoring.adaptive_powers(single, 100, config)[1] == pytest.approx(0.5)
    extreme = default_scoring.adaptive_powers(cands, 10**9, config)
    assert 0.0 <= extreme[0] <= 1.5 and 0.0 <= extreme[1] <= 2.0


def test_capitalised_share_counts_names_inside_sentences_only():
    def share(text):
        words, spans, _segments = phrases.english_words(text)
        return phrases.capitalised_share(text, words, spans)

    # Sentence starts (text start, after . ! ? : ; or a line break) and acronyms do not count.
    assert share("Graph data. Nodes carry labels! Edges? GNN and CNN models") == 0.0
    assert share("Title of a paper\nAbstract text follows") == 0.0
    # Names inside a sentence do: 2 of 9 words.
    assert share("The band Phish played at Watkins near the lake") == pytest.approx(2 / 9)
    assert share("") == 0.0


def test_case_changes_split_a_run_in_title_from_its_abstract():
    text = "Resource provisioning for web applications Dynamic resource provisioning uses Petri nets"
    words, _spans, segments = phrases.english_words(text)
    split = phrases.split_at_case_changes(words, segments)
    valid = phrases.english_valid_mask(words)
    joined = phrases.build_candidate_set(words, valid, segments, "en")
    separated = phrases.build_candidate_set(words, valid, split, "en")
    assert "web applications Dynamic resource" in joined.texts
    assert not any("applications Dynamic" in t for t in separated.texts)
    assert {"web applications", "Dynamic resource provisioning", "Petri nets"} <= set(separated.texts)
    # Only a lowercase -> Capitalised step splits: acronyms, capitalised runs and the first word do not.
    words = ["Graph", "GNN", "models", "New", "York", "city"]
    assert phrases.split_at_case_changes(words, np.zeros(6, dtype=np.int64)).tolist() == [0, 0, 0, 1, 1, 1]


def test_title_case_sentences_are_headline_style_not_names():
    def marks(text):
        words, spans, _segments = phrases.english_words(text)
        return words, phrases.title_case_words(text, words, spans), phrases.capitalised_share(text, words, spans)

    # a capitalised stop word inside the sentence, or 80 % capitals over 4+ words: Title Case
    words, title, share = marks("Deep Learning For Graph Neural Networks. We met Hailee Steinfeld in York.")
    assert title.tolist() == [True] * 6 + [False] * 6
    assert share == pytest.approx(3 / 12)  # Hailee, Steinfeld, York; the title's capitals do not count
    assert marks("GRAPH NEURAL NETWORKS LEARN FAST")[1].all()
    # prose with names stays prose
    assert not marks("Barack Obama and Michelle Obama visited New York City")[1].any()
    # pieces of a Title Case title are not pieces of names
    text = "Deep Learning For Graph Neural Networks"
    words, spans, segments = phrases.english_words(text)
    cands = phrases.build_candidate_set(words, phrases.english_valid_mask(words), segments, "en")
    assert not phrases.name_fragments(text, words, spans, cands).any()


def test_pieces_of_names_are_marked_unless_they_also_stand_alone():
    text = "Hailee Steinfeld met Universal Pictures in New York. Steinfeld, aged 14, plays graph games."
    words, spans, segments = phrases.english_words(text)
    cands = phrases.build_candidate_set(words, phrases.english_valid_mask(words), segments, "en")
    marked = dict(zip(cands.texts, phrases.name_fragments(text, words, spans, cands)))
    # pieces of a capitalised run: marked; whole runs and lowercase phrases: not
    assert marked["Hailee"] and marked["Universal"] and marked["Pictures"] and marked["York"]
    assert not marked["Hailee Steinfeld"] and not marked["Universal Pictures"] and not marked["graph games"]
    # "Steinfeld" also occurs on its own (the comma ends the run), so it is a keyword candidate
    assert not marked["Steinfeld"]
    assert not phrases.name_fragments("", [], np.zeros((0, 2), dtype=np.int64), phrases.build_candidate_set(
        [], np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64), "en")).any()


def test_shipped_english_default_reads_title_case_as_phrases():
    _bundle_or_skip("minilm-l6-en")
    ex = KeyAttenExtractor("minilm-l6-en", "en", intra_op_threads=1)
    top = ex.extract_keywords(
        "Deep Learning For Graph Neural Networks: A Survey Of Methods And Applications In Drug Discovery", top_k=3
    )
    assert {"Deep Learning", "Drug Discovery"} <= set(top) and not {"Deep", "Drug", "Graph"} & set(top)


def test_shipped_english_default_keeps_names_whole_in_news():
    _bundle_or_skip("minilm-l6-en")
    ex = KeyAttenExtractor("minilm-l6-en", "en", intra_op_threads=1)
    text = (
        "Hailee Steinfeld, the Oscar-nominated star of True Grit, is in talks to play Sleeping Beauty in a new "
        "film adaptation that Universal Pictures will shoot in California next year."
    )
    top = ex.extract_keywords(text, top_k=8)
    assert {"Hailee Steinfeld", "True Grit", "Universal Pictures"} <= set(top)
    assert not {"Steinfeld", "Grit", "Universal", "Hailee"} & set(top)


def test_names_shorten_candidates_and_weigh_repeats_in_short_texts_only():
    config = profile_constants.DefaultProfileConfig(
        frequency_power=0.5, length_power=1.0, length_power_names=-5.0, frequency_power_names=6.0, names_words=3000.0
    )
    _w, cands = _words_cands("graph data graph data nodes")
    assert default_scoring.adaptive_powers(cands, 300, config, 0.0) == (0.5, 1.0, config.position_scale)
    fp, lp, _scale = default_scoring.adaptive_powers(cands, 300, config, 0.1)
    gate = math.exp(-300 / 3000)
    assert fp == pytest.approx(0.5 + 0.6 * gate) and lp == pytest.approx(1.0 - 0.5 * gate)
    # A long paper's capitalised headings and references barely move its priors.
    fp_long, lp_long, _ = default_scoring.adaptive_powers(cands, 9000, config, 0.1)
    assert abs(fp_long - 0.5) < 0.05 and abs(lp_long - 1.0) < 0.05
    # Bounds hold for any share.
    fp_max, lp_max, _ = default_scoring.adaptive_powers(cands, 10, config, 1.0)
    assert (fp_max, lp_max) == (1.5, 0.0)


def test_pos_lexicon_keeps_verbs_adverbs_pronouns_out_of_candidates():
    text = "Graph neural networks learn representations of nodes efficiently; everyone proposes models."
    _w, plain = _words_cands(text)
    _w, filtered = _words_cands(text, "lexicon")
    lexicon = phrases.non_keyphrase_words()
    assert {"learn", "efficiently", "proposes", "whichever"} <= lexicon
    assert not phrases.english_valid_mask(["everyone", "whichever", "learns"], "lexicon").any()
    # ambiguous words (noun or verb) stay candidate words
    assert not {"learning", "structure", "results", "graph", "networks", "models"} & lexicon
    plain_texts = [t.lower() for t in plain.texts]
    assert "neural networks learn" in plain_texts and "graph neural networks learn" in plain_texts
    for text_ in filtered.texts:
        assert not set(text_.lower().split()) & lexicon, text_
    filtered_texts = [t.lower() for t in filtered.texts]
    assert "graph neural networks" in filtered_texts and "representations" in filtered_texts
    with pytest.raises(InvalidArgumentError, match="pos_filter"):
        profile_constants.DefaultProfileConfig(pos_filter="spacy")


def test_chinese_extra_tags_make_jieba_compounds_candidates():
    words, tags = ["自然语言", "处理", "是", "人工智能"], ["l", "v", "v", "n"]
    base = phrases.chinese_valid_mask(words, tags)
    extended = phrases.chinese_valid_mask(words, tags, ("l", "j"))
    assert base.tolist() == [False, True, False, True]  # the compatible path's rule
    assert extended.tolist() == [True, True, False, True]
    cands = phrases.build_candidate_set(words, extended, None, "zh", tags=tags)
    assert "自然语言处理" in cands.texts


def test_shipped_english_default_keeps_verbs_out_of_keyphrases():
    _bundle_or_skip("minilm-l6-en")
    ex = KeyAttenExtractor("minilm-l6-en", "en", intra_op_threads=1)
    text = "Graph neural networks learn representations of nodes from the structure of graph data."
    phrases = ex.extract_keywords(text, top_k=15)
    assert phrases and not any("learn" in p.split() for p in phrases)  # "learn" is only ever a verb
    assert "graph data" in phrases
    # The adaptive priors measured for issue 14 are off in what ships (they cost abstracts and papers).
    en = profile_constants.BUNDLE_CONFIGS["minilm-l6-en"]
    assert (en.length_power_repeat, en.frequency_power_size, en.position_scale_size) == (0.0, 0.0, 0.0)


def test_idf_method_needs_idf_and_bad_arguments_fail():
    ex = KeyAttenExtractor("minilm-l6-en", "en")
    with pytest.raises(InvalidArgumentError):
        ex.extract_keywords_batch(["text"], "samrank_idf", 10, None)
    with pytest.raises(InvalidArgumentError):
        ex.extract_keywords_batch(["text"], "no_such_method", 10)
    with pytest.raises(InvalidArgumentError):
        ex.extract_keywords_batch(["text"], "samrank", 0)
    assert not ex.resources.bundle_loaded  # every argument error comes before the model
    with pytest.raises(InvalidArgumentError):
        profile_constants.DefaultProfileConfig(nested="maybe")


# ------------------------------------------------------------------------------------------ determinism
def test_deterministic_and_batch_equals_single():
    _bundle_or_skip("minilm-l6-en")
    ex = KeyAttenExtractor("minilm-l6-en", "en", intra_op_threads=1)
    texts = [
        "Graph neural networks learn graph data. Graph neural networks scale.",
        "A short note on keyphrase extraction with attention, and on keyphrase evaluation.",
        "",
    ]
    ex.fit_idf(texts)
    first = ex.extract_keywords_batch(texts, "samrank_idf", 5, with_scores=True)
    second = ex.extract_keywords_batch(texts, "samrank_idf", 5, with_scores=True)
    assert first == second
    assert first[2] == []
    for text, batched in zip(texts[:2], first):
        single = ex.extract_keywords(text, "samrank_idf", 5, with_scores=True)
        assert [p for p, _ in single] == [p for p, _ in batched]
        assert np.allclose([s for _, s in single], [s for _, s in batched], atol=1e-5)


def test_several_methods_from_one_pass_equal_one_method_at_a_time(monkeypatch):
    _bundle_or_skip("minilm-l6-en")
    ex = KeyAttenExtractor("minilm-l6-en", "en", intra_op_threads=1)
    texts = [
        "Graph neural networks learn graph data. Graph neural networks scale to large graphs.",
        "Keyphrase extraction ranks candidate phrases; attention weights score each candidate phrase.",
    ]
    ex.fit_idf(texts)
    methods = ["samrank_idf", "cls_attn", "received_attn_idf", "fusion_attn"]  # bases read different layers
    one_at_a_time = {m: ex.extract_keywords_batch(texts, m, 8, with_scores=True) for m in methods}
    passes = []
    real_run = ex.bundle.run_attention
    monkeypatch.setattr(ex.bundle, "run_attention", lambda *a, **k: passes.append(1) or real_run(*a, **k))
    together = ex.extract_keywords_methods(texts, methods, 8)
    assert len(passes) == 1  # both documents, all four methods, one forward pass
    for m in methods:
        assert len(together[m]) == len(texts)
        for got, want in zip(together[m], one_at_a_time[m]):
            assert [p for p, _ in got] == [p for p, _ in want]
            assert [s for _, s in got] == [s for _, s in want]  # the same arithmetic, to the bit
    ex.idf = None
    with pytest.raises(InvalidArgumentError, match="IDF"):
        ex.extract_keywords_methods(texts, ["cls_attn", "samrank_idf"], 5)


def test_chinese_default_profile_runs():
    _bundle_or_skip("e5-small-zh")
    ex = KeyAttenExtractor("e5-small-zh", "zh", intra_op_threads=1)
    text = "本文研究飞行器姿态控制系统，提出了飞行器姿态控制的新方法。"
    out = ex.extract_keywords(text, "samrank", 5, with_scores=True)
    assert out and all(re.search("[\u4e00-\u9fff]", p) for p, _ in out)
    assert all(p in text for p, _ in out)  # Chinese candidates are contiguous text


def test_contained_rule_fills_up_to_top_k_with_suppressed_candidates():
    words, cands = _words_cands("graph neural networks. graph neural networks")
    scores = np.asarray([float(n) for n in cands.n_words])  # longest first
    ranked = default_scoring.rank_candidate_set(cands, scores, 10, "contained")
    assert ranked[0][0] == "graph neural networks"
    assert len(ranked) == len(cands)  # every nested candidate is suppressed, then fills the list
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    assert len(default_scoring.rank_candidate_set(cands, scores, 2, "contained")) == 2
