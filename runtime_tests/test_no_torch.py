"""The runtime never imports torch or transformers (nor nltk: the Porter stemmer is its own): proven with
all three made unimportable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import REPO

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers", "nltk"):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    """
)


def run_blocked(body: str) -> dict:
    code = BLOCKER + textwrap.dedent(body) + textwrap.dedent(
        """
        import json, sys
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "nltk"))
        print(json.dumps({"heavy": heavy, "result": result}, ensure_ascii=False))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_loads_nothing_heavy():
    out = run_blocked(
        """
        import keyatten_lite, sys
        from keyatten_lite import KeyAttenExtractor, get_method_catalog
        result = sorted(m for m in sys.modules if m.split(".")[0] in ("onnxruntime", "jieba", "nltk", "tokenizers"))
        """
    )
    assert out["heavy"] == []
    assert out["result"] == [], "import keyatten_lite must stay light (lazy onnxruntime, jieba, nltk, tokenizers)"


def test_full_extraction_runs_with_torch_unimportable(en_bundle, zh_bundle):
    out = run_blocked(
        f"""
        from keyatten_lite import KeyAttenExtractor
        en = KeyAttenExtractor(model={str(en_bundle)!r}, language="en")
        en.fit_idf(["graph neural networks", "attention models for text"])
        zh = KeyAttenExtractor(model={str(zh_bundle)!r}, language="zh")
        result = [
            en.extract_keywords("Graph neural networks learn from graph data.", method="samrank_idf"),
            zh.extract_keywords_batch(["自然语言处理是人工智能的重要方向"], method="fusion_attn"),
        ]
        """
    )
    assert out["heavy"] == []
    assert out["result"][0] and out["result"][1][0]
