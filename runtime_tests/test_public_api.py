"""The public API and the command line, pinned to what they were before the package was restructured
(issue 12): every name, parameter, default and command-line option of then is still there. New names and
options may be added; nothing may disappear or change its default."""

from __future__ import annotations

import argparse
import inspect
import json

import keyatten_lite
from keyatten_lite import IdfState, KeyAttenExtractor

EXPORTS = ["ATTENTION_IDF_METHODS", "Bundle", "BundleError", "BundleNotFoundError", "ChecksumError", "DEFAULT_ZH_CAUSAL_INSTRUCTION_PREFIX", "IdfState", "InvalidArgumentError", "KeyAttenExtractor", "KeyAttenLiteError", "METHOD_CATEGORIES", "WordWeight", "__version__", "extract_keywords", "get_method_catalog", "open_bundle"]
EXTRACTOR_INIT = json.loads(r'''[["self", "POSITIONAL_OR_KEYWORD", null], ["model", "POSITIONAL_OR_KEYWORD", "None"], ["language", "POSITIONAL_OR_KEYWORD", "'zh'"], ["device", "POSITIONAL_OR_KEYWORD", "'cpu'"], ["backend", "POSITIONAL_OR_KEYWORD", "'auto'"], ["onnx_path", "POSITIONAL_OR_KEYWORD", "None"], ["user_dict", "POSITIONAL_OR_KEYWORD", "None"], ["layer_index", "POSITIONAL_OR_KEYWORD", "None"], ["layer_indices", "POSITIONAL_OR_KEYWORD", "None"], ["layer_weights", "POSITIONAL_OR_KEYWORD", "None"], ["instruction_prefix", "POSITIONAL_OR_KEYWORD", "None"], ["is_causal_override", "POSITIONAL_OR_KEYWORD", "None"], ["dedup_nested_for_topk5", "POSITIONAL_OR_KEYWORD", "False"], ["dedup_nested", "POSITIONAL_OR_KEYWORD", "False"], ["candidate_scoring", "POSITIONAL_OR_KEYWORD", "'word'"], ["dtype", "POSITIONAL_OR_KEYWORD", "'auto'"], ["bio_model_path", "POSITIONAL_OR_KEYWORD", "None"], ["cache_enabled", "POSITIONAL_OR_KEYWORD", "False"], ["cache_dir", "POSITIONAL_OR_KEYWORD", "'cache'"], ["variant", "KEYWORD_ONLY", "None"], ["intra_op_threads", "KEYWORD_ONLY", "None"], ["providers", "KEYWORD_ONLY", "None"], ["tie_break", "KEYWORD_ONLY", "'earlier'"], ["max_chars", "KEYWORD_ONLY", "100000"], ["cache_max_bytes", "KEYWORD_ONLY", "268435456"], ["profile", "KEYWORD_ONLY", "'default'"]]''')
EXTRACTOR_MEMBERS = json.loads(r'''{"bundle": "property", "candidate_phrases": [["self", "POSITIONAL_OR_KEYWORD", null], ["text", "POSITIONAL_OR_KEYWORD", null]], "extract_keywords": [["self", "POSITIONAL_OR_KEYWORD", null], ["text", "POSITIONAL_OR_KEYWORD", null], ["method", "POSITIONAL_OR_KEYWORD", "'received_attn'"], ["top_k", "POSITIONAL_OR_KEYWORD", "10"], ["idf_lookup", "POSITIONAL_OR_KEYWORD", "None"], ["pos_tags", "POSITIONAL_OR_KEYWORD", "None"], ["with_scores", "KEYWORD_ONLY", "False"]], "extract_keywords_batch": [["self", "POSITIONAL_OR_KEYWORD", null], ["texts", "POSITIONAL_OR_KEYWORD", null], ["method", "POSITIONAL_OR_KEYWORD", "'received_attn'"], ["top_k", "POSITIONAL_OR_KEYWORD", "10"], ["idf_lookup", "POSITIONAL_OR_KEYWORD", "None"], ["pos_tags_batch", "POSITIONAL_OR_KEYWORD", "None"], ["batch_size", "KEYWORD_ONLY", "16"], ["with_scores", "KEYWORD_ONLY", "False"]], "extract_word_weights": [["self", "POSITIONAL_OR_KEYWORD", null], ["text", "POSITIONAL_OR_KEYWORD", null], ["method", "POSITIONAL_OR_KEYWORD", "'received_attn'"], ["pos_tags", "POSITIONAL_OR_KEYWORD", "None"]], "fit_idf": [["self", "POSITIONAL_OR_KEYWORD", null], ["texts", "POSITIONAL_OR_KEYWORD", null], ["pos_tags_batch", "POSITIONAL_OR_KEYWORD", "None"]], "idf_lookup": "property", "is_causal": "property", "load_idf": [["self", "POSITIONAL_OR_KEYWORD", null], ["path", "POSITIONAL_OR_KEYWORD", null]], "save_idf": [["self", "POSITIONAL_OR_KEYWORD", null], ["path", "POSITIONAL_OR_KEYWORD", null]], "segment": [["self", "POSITIONAL_OR_KEYWORD", null], ["text", "POSITIONAL_OR_KEYWORD", null]], "update_idf": [["self", "POSITIONAL_OR_KEYWORD", null], ["texts", "POSITIONAL_OR_KEYWORD", null], ["pos_tags_batch", "POSITIONAL_OR_KEYWORD", "None"]]}''')
EXTRACT_KEYWORDS = json.loads(r'''[["text", "POSITIONAL_OR_KEYWORD", null], ["model", "POSITIONAL_OR_KEYWORD", "None"], ["language", "POSITIONAL_OR_KEYWORD", "'zh'"], ["method", "POSITIONAL_OR_KEYWORD", "'received_attn'"], ["top_k", "POSITIONAL_OR_KEYWORD", "10"], ["idf_lookup", "POSITIONAL_OR_KEYWORD", "None"], ["pos_tags", "POSITIONAL_OR_KEYWORD", "None"], ["with_scores", "KEYWORD_ONLY", "False"], ["options", "VAR_KEYWORD", null]]''')
IDF_STATE = json.loads(r'''{"add_document_keys": [["self", "POSITIONAL_OR_KEYWORD", null], ["keys", "POSITIONAL_OR_KEYWORD", null]], "doc_count": "member_descriptor", "document_frequency": "member_descriptor", "fingerprint": [["self", "POSITIONAL_OR_KEYWORD", null]], "fit_keys": [["self", "POSITIONAL_OR_KEYWORD", null], ["key_sets", "POSITIONAL_OR_KEYWORD", null]], "from_lookup": [["mapping", "POSITIONAL_OR_KEYWORD", null]], "has_counts": "property", "load": [["path", "POSITIONAL_OR_KEYWORD", null]], "lookup": [["self", "POSITIONAL_OR_KEYWORD", null]], "merge": [["self", "POSITIONAL_OR_KEYWORD", null], ["other", "POSITIONAL_OR_KEYWORD", null]], "save": [["self", "POSITIONAL_OR_KEYWORD", null], ["path", "POSITIONAL_OR_KEYWORD", null]], "update_keys": [["self", "POSITIONAL_OR_KEYWORD", null], ["key_sets", "POSITIONAL_OR_KEYWORD", null]]}''')
# sub-command path -> option strings (the positional arguments by their names)
COMMAND_LINE = json.loads(r'''{"": [], "bench": ["--batch-size", "--bundle", "--keyatten-model", "--limit", "--markdown", "--methods", "--no-cold", "--plot", "--repeats", "--single-docs", "--step-timeout", "--threads", "--variants", "-o/--output", "corpus"], "bench-report": ["-o/--output", "results"], "cache": [], "cache clear": ["--cache-dir"], "cache info": ["--cache-dir", "--max-bytes"], "cache prune": ["--cache-dir", "--max-bytes"], "eval": ["--batch-size", "--bootstrap-resamples", "--idf-corpus", "--ids-file", "--ks", "--lang", "--limit", "--markdown", "--offset", "--plot", "--predictions-out", "--reference", "--seed", "--split", "--threads", "--top-n", "-o/--output", "-q/--quiet", "-s/--system", "dataset"], "extract": ["--batch-size", "--fp32", "--idf", "--int8", "--json", "--lang", "--model", "--threads", "-i/--input", "-k/--top-k", "-m/--method", "-o/--output", "text"], "idf": [], "idf fit": ["--lang", "--merge", "-o/--output", "corpus"], "models": [], "models build": ["--force", "--name"], "models list": ["--json"]}''')


def params(fn):
    out = []
    for p in inspect.signature(fn).parameters.values():
        default = None if p.default is inspect.Parameter.empty else repr(p.default)
        out.append([p.name, p.kind.name, default])
    return out


def test_exports():
    assert set(EXPORTS) <= set(keyatten_lite.__all__)
    for name in EXPORTS:
        assert getattr(keyatten_lite, name) is not None


def test_extractor_signature_and_members():
    assert params(KeyAttenExtractor.__init__) == EXTRACTOR_INIT
    for name, expected in EXTRACTOR_MEMBERS.items():
        member = getattr(KeyAttenExtractor, name)
        if expected == "property":
            assert isinstance(member, property), name
        else:
            assert params(member) == expected, name


def test_convenience_function_and_idf_state():
    assert params(keyatten_lite.extract_keywords) == EXTRACT_KEYWORDS
    for name, expected in IDF_STATE.items():
        member = getattr(IdfState, name)
        assert (params(member) if callable(member) else type(member).__name__) == expected, name


def command_line_shape(parser, prefix=()):
    shape = {}
    options = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                shape.update(command_line_shape(sub, prefix + (name,)))
        elif not isinstance(action, argparse._HelpAction):
            options.append("/".join(action.option_strings) or action.dest)
    shape[" ".join(prefix)] = sorted(options)
    return shape


def test_command_line():
    from keyatten_lite.cli.main import build_parser

    shape = command_line_shape(build_parser())
    for command, options in COMMAND_LINE.items():
        assert command in shape, f"`keyatten-lite {command}` is gone"
        assert set(options) <= set(shape[command]), f"`keyatten-lite {command}` lost {set(options) - set(shape[command])}"


def test_the_pin_can_fail():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    sub.add_parser("extract").add_argument("--json")
    assert command_line_shape(parser) == {"": [], "extract": ["--json"]}
    assert params(lambda a, *, b=1: None) == [["a", "POSITIONAL_OR_KEYWORD", None], ["b", "KEYWORD_ONLY", "1"]]
