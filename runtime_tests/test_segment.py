"""Segmentation: spec §4.1/§4.2 fixtures, user dictionaries, isolation, alignment, robustness."""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyatten_lite.errors import InvalidArgumentError
from keyatten_lite.text.segment import (
    ChineseSegmenter,
    locate_word_offsets,
    merge_english_words,
    segment_english,
    segment_text,
)

pytest.importorskip("jieba", reason="jieba is needed for Chinese segmentation")


@pytest.fixture(scope="module")
def segmenter() -> ChineseSegmenter:
    seg = ChineseSegmenter()
    seg.initialize()
    return seg


# ------------------------------------------------------------------ §4.12 fixtures (jieba 0.42.1)
def test_fixture_natural_language_processing(segmenter):
    words, tags = segmenter.segment("自然语言处理是人工智能的重要方向")
    assert list(zip(words, tags)) == [
        ("自然语言", "l"), ("处理", "v"), ("是", "v"), ("人工智能", "n"), ("的", "uj"), ("重要", "a"), ("方向", "n")
    ]


def test_fixture_space_information(segmenter):
    words, tags = segmenter.segment("空天信息系统优化方法")
    assert list(zip(words, tags)) == [("空天", "nr"), ("信息系统", "n"), ("优化", "vn"), ("方法", "n")]


def test_fixture_english_remerge(segmenter):
    words, tags = segmenter.segment("OpenAI发布了GPT-4o多模态模型，Limbic System研究")
    assert list(zip(words, tags)) == [
        ("OpenAI", "eng"), ("发布", "v"), ("了", "ul"), ("GPT", "eng"), ("-", "x"), ("4", "m"), ("o", "eng"),
        ("多", "m"), ("模态", "n"), ("模型", "n"), ("，", "x"), ("Limbic System", "eng"), ("研究", "vn"),
    ]


def test_title_is_registered_and_persists_within_the_instance():
    seg = ChineseSegmenter()
    before = seg.dictionary_fingerprint()
    words, tags = seg.segment("《量子纠缠态》很重要")
    assert ("量子纠缠态", "nz") in zip(words, tags)
    assert seg.dictionary_fingerprint() != before
    # §4.1 step 2: the registration is permanent, so later documents see the term as one word.
    words, tags = seg.segment("量子纠缠态很重要")
    assert ("量子纠缠态", "nz") in zip(words, tags)


def test_english_segmentation_spec_rules():
    # §4.2: digits-only tokens and punctuation vanish, "3D" yields "D", every tag is eng.
    words, tags = segment_english("3D models, key-phrases & 2024 GPT-4o!")
    assert words == ["D", "models", "key-phrases", "GPT-4o"]
    assert tags == ["eng"] * 4


def test_merge_rules_a_then_b_not_a_again():
    # §4.1 step 4 on a hand-made tag sequence: (a) joins "Meta - cognition" without spaces,
    # (b) then appends eng words with one space, and (a) is not re-run after (b).
    words = ["Meta", "-", "cognition", "Limbic", "System", "/", "x", "研究"]
    tags = ["eng", "x", "eng", "eng", "eng", "x", "eng", "vn"]
    assert merge_english_words(words, tags) == (
        ["Meta-cognition Limbic System", "/", "x", "研究"],
        ["eng", "x", "eng", "vn"],
    )


def test_merge_requires_x_separator_and_following_eng():
    assert merge_english_words(["A", "-", "中"], ["eng", "x", "n"]) == (["A", "-", "中"], ["eng", "x", "n"])
    assert merge_english_words(["A", "，", "B"], ["eng", "x", "eng"]) == (["A", "，", "B"], ["eng", "x", "eng"])
    assert merge_english_words(["A", "-", "B"], ["engx", "x", "eng"]) == (["A-B"], ["engx"])


def test_segment_text_dispatch_and_language_check(segmenter):
    assert segment_text("Graph data", "en") == (["Graph", "data"], ["eng", "eng"])
    assert segment_text("方法", "zh", segmenter) == (["方法"], ["n"])
    with pytest.raises(InvalidArgumentError):
        segment_text("x", "fr")
    with pytest.raises(InvalidArgumentError):
        segmenter.segment(b"bytes")  # type: ignore[arg-type]


# ------------------------------------------------------------------ user dictionaries (§4.9)
def _global_jieba_state():
    import jieba
    import jieba.finalseg
    import jieba.posseg

    return (
        jieba.dt.initialized,
        jieba.dt.total,
        dict(jieba.dt.user_word_tag_tab),
        len(jieba.posseg.dt.word_tag_tab),
        set(jieba.finalseg.Force_Split_Words),
    )


def test_two_segmenters_do_not_contaminate_each_other_or_jieba():
    import jieba
    import jieba.posseg

    jieba.initialize()  # so that the checks below look at a loaded global dictionary
    global_before = _global_jieba_state()
    first = ChineseSegmenter(user_dict=["空天信息"])
    second = ChineseSegmenter(user_dict={"量子纠缠态": "vn", "信息化": (0, "n")})
    plain = ChineseSegmenter()

    assert ("空天信息", "nz") in zip(*first.segment("空天信息"))
    assert "空天信息" not in second.segment("空天信息")[0]
    assert ("量子纠缠态", "vn") in zip(*second.segment("量子纠缠态"))
    # Frequency 0 removes a default word from this segmenter only (and not via jieba's globals).
    assert "信息化" in plain.segment("信息化")[0]
    assert "信息化" not in second.segment("信息化")[0]
    assert "量子纠缠态" not in first.segment("量子纠缠态")[0]
    # Titles stay in the instance that saw them.
    first.segment("《光子晶体光纤》")
    assert "光子晶体光纤" not in second.segment("光子晶体光纤很细")[0]
    for term in ("空天信息", "量子纠缠态", "光子晶体光纤"):
        assert term not in plain.segment(term)[0]

    assert _global_jieba_state() == global_before
    assert "空天信息" not in jieba.dt.FREQ
    assert "量子纠缠态" not in jieba.posseg.dt.word_tag_tab


def test_user_dict_file_format(tmp_path):
    path = tmp_path / "dict.txt"
    path.write_text("\ufeff空天信息 5 nt\n量子纠缠态\n\n纠缠态测量 3\n", encoding="utf-8")
    seg = ChineseSegmenter(user_dict=path)
    assert ("空天信息", "nt") in zip(*seg.segment("空天信息"))
    assert "量子纠缠态" in seg.segment("量子纠缠态")[0]
    same = ChineseSegmenter(user_dict=str(path))
    assert same.dictionary_fingerprint() == seg.dictionary_fingerprint()
    path.write_text("空天信息 5 nt\n", encoding="utf-8")
    assert ChineseSegmenter(user_dict=path).dictionary_fingerprint() != seg.dictionary_fingerprint()


def test_user_dict_validation(tmp_path):
    with pytest.raises(InvalidArgumentError, match="not found"):
        ChineseSegmenter(user_dict=tmp_path / "missing.txt")
    with pytest.raises(InvalidArgumentError):
        ChineseSegmenter(user_dict={"词语": ("x", "n")})
    with pytest.raises(InvalidArgumentError):
        ChineseSegmenter(user_dict={"词语": (1, 2, 3)})
    with pytest.raises(InvalidArgumentError):
        ChineseSegmenter(user_dict=42)  # type: ignore[arg-type]
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("词语\n".encode("utf-8") + b"caf\xe9\n")
    with pytest.raises(InvalidArgumentError, match="line 2"):
        ChineseSegmenter(user_dict=bad)


def test_user_dict_forms_normalise_to_the_same_fingerprint():
    # Strip, skip empty, tag None -> nz, each triple registered once (§4.9).
    a = ChineseSegmenter(user_dict=[" 空天信息 ", "", "空天信息"])
    b = ChineseSegmenter(user_dict={"空天信息": None})
    c = ChineseSegmenter(user_dict={"空天信息": (None, None)})
    d = ChineseSegmenter(user_dict={"空天信息": "n"})
    assert a.dictionary_fingerprint() == b.dictionary_fingerprint() == c.dictionary_fingerprint()
    assert d.dictionary_fingerprint() != a.dictionary_fingerprint()


def test_concurrent_segmentation_is_consistent(segmenter):
    texts = ["空天信息系统优化方法", "自然语言处理是人工智能的重要方向"] * 10
    expected = [segmenter.segment(t) for t in texts]
    results: dict[int, tuple] = {}

    def work(i: int) -> None:
        results[i] = segmenter.segment(texts[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(texts))] == expected


# ------------------------------------------------------------------ alignment (§4.7, §12.1 item 6)
def test_locate_compat_retries_from_zero_and_raises():
    # The retry from 0 aligns "a" back onto its first occurrence (the 0.3.1 quirk).
    assert locate_word_offsets("a b", ["b", "a"], compat=True) == [(2, 3), (0, 1)]
    with pytest.raises(InvalidArgumentError, match="Failed to align word"):
        locate_word_offsets("Limbic\nSystem", ["Limbic System"], compat=True)


def test_locate_default_handles_whitespace_runs_and_never_goes_back():
    text = "Limbic\n  System and Meta - cognition"
    spans = locate_word_offsets(text, ["Limbic System", "and", "Meta-cognition"])
    assert [text[s:e] for s, e in spans] == ["Limbic\n  System", "and", "Meta - cognition"]
    spans = locate_word_offsets("a b", ["b", "a", "b"])
    assert spans == [(2, 3), (3, 3), (3, 3)]


@settings(max_examples=200, deadline=None)
@given(st.text(), st.lists(st.text(max_size=4), max_size=8))
def test_locate_default_is_monotonic_and_total(text, words):
    spans = locate_word_offsets(text, words)
    assert len(spans) == len(words)
    cursor = 0
    for (start, end), word in zip(spans, words):
        assert cursor <= start <= end <= len(text)
        if word and word in text[cursor:] and not any(c in " -./\\@#&*+=~`|" for c in word):
            assert text[start:end] == word and start == text.index(word, cursor)
        cursor = end


# ------------------------------------------------------------------ robustness (hypothesis)
_NASTY_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(),  # includes lone surrogates and control characters
        st.sampled_from(list("《》 \t\n\r-./@#&*+=~`|中文模型😀ÀAz09")),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_NASTY_TEXT)
def test_segmentation_never_raises(segmenter, text):
    for language in ("zh", "en"):
        words, tags = segment_text(text, language, segmenter)
        assert len(words) == len(tags)
        assert all(w and w == w.strip() for w in words)
        # Every word is found in the text by the tolerant aligner (never an empty fallback span).
        spans = locate_word_offsets(text, words)
        assert all(end > start for start, end in spans)
