"""Which language a text is in, for inputs that do not say: the rule the command line, the service and
the Ray engine share."""

from __future__ import annotations

import re

# A CJK ideograph: basic block, extension A, compatibility ideographs (also read by text/spans.py).
CJK_IDEOGRAPH = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")


def detect_language(text: str) -> str:
    """'zh' when the text has CJK ideographs and they are not swamped by Latin words, else 'en'."""
    cjk = len(CJK_IDEOGRAPH.findall(text))
    latin_words = len(_LATIN_WORD.findall(text))
    return "zh" if cjk > 0 and cjk >= latin_words else "en"
