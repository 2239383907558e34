"""The Ray Data stages of the engine, run in Ray's workers: plan a shard (validate, count per
language), read a chunk's records, extract a chunk in an actor (one extractor per language per actor),
count a shard's document frequencies."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from keyatten_lite.distributed.shards import (
    LANG_LETTER,
    RecordError,
    for_driver,
    shard_records,
)
from keyatten_lite.errors import InvalidArgumentError

@for_driver
def plan_batch(batch, lang: str | None):
    """Ray Data task: validate each shard and count its records per language."""
    import pyarrow as pa

    infos = []
    for spec in batch.column("spec").to_pylist():
        shard = json.loads(spec)
        info: dict[str, Any] = {"shard": shard["id"], "records": 0, "lines": 0, "langs": {}, "error": None}
        try:
            records, langs, n_lines = shard_records(shard, lang)
            # The language sequence (one letter a record): the driver needs it to cut the CLI's blocks.
            info.update(records=len(records), lines=n_lines, langs=dict(Counter(langs)),
                        seq="".join(LANG_LETTER[x] for x in langs))
        except RecordError as exc:
            info["error"] = [exc.where, exc.message]
        infos.append(json.dumps(info))
    return pa.table({"info": pa.array(infos, pa.string())})


def payload(rec: dict, gidx: int) -> str:
    # [text, id]: the id as the CLI would write it (rec.get("id", i)). JSON keeps its type through
    # Arrow; lone surrogates (which UTF-8 cannot hold) fall back to ASCII escapes.
    value = [rec["text"], rec.get("id", gidx)]
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True)
    return text


@for_driver
def read_chunks(batch, lang: str | None):
    """Ray Data task: the records of each chunk, in corpus order, as one row per chunk."""
    import pyarrow as pa

    keys, langs, ns, gidx_lists, rec_lists = [], [], [], [], []
    for spec in batch.column("spec").to_pylist():
        chunk = json.loads(spec)
        want = chunk["lang"]
        gidxs: list[int] = []
        recs: list[str] = []
        for part in chunk["parts"]:
            try:
                records, rec_langs, _ = shard_records(part["shard"], lang)
            except RecordError as exc:
                raise InvalidArgumentError(f"{part['shard']['path']} changed while it was being read ({exc.message})") from None
            rank = 0
            for j, (rec, rec_lang) in enumerate(zip(records, rec_langs)):
                if rec_lang != want:
                    continue
                if rank >= part["lo"]:
                    g = part["gstart"] + j
                    gidxs.append(g)
                    recs.append(payload(rec, g))
                rank += 1
                if rank >= part["hi"]:
                    break
        if len(recs) != chunk["n"]:
            raise InvalidArgumentError(f"chunk {chunk['key']}: expected {chunk['n']} records, read {len(recs)} (inputs changed?)")
        keys.append(chunk["key"])
        langs.append(want)
        ns.append(chunk["n"])
        gidx_lists.append(gidxs)
        rec_lists.append(recs)
    return pa.table({
        "key": pa.array(keys, pa.string()),
        "lang": pa.array(langs, pa.string()),
        "n": pa.array(ns, pa.int64()),
        "gidx": pa.array(gidx_lists, pa.list_(pa.int64())),
        "recs": pa.array(rec_lists, pa.list_(pa.string())),
    })


class ExtractActor:
    """Ray Data actor: one KeyAttenExtractor per language, built as the CLI builds it."""

    def __init__(self, options: dict, pid_dir: str | None = None) -> None:
        self.options = options
        self.extractors: dict[str, Any] = {}
        if pid_dir:
            # For tests and the scale script: who the actors are (a restarted actor writes anew).
            Path(pid_dir).mkdir(parents=True, exist_ok=True)
            (Path(pid_dir) / f"actor-{os.getpid()}.pid").write_text(f"{os.getpid()}\n")

    def _extractor(self, lang: str):
        if lang not in self.extractors:
            from keyatten_lite import KeyAttenExtractor

            o = self.options
            ex = KeyAttenExtractor(
                model=o["model"],
                language=lang,
                variant=o["variant"],
                intra_op_threads=o["threads"],
            )
            if o["idf_path"]:
                ex.load_idf(o["idf_path"])
            self.extractors[lang] = ex
        return self.extractors[lang]

    @for_driver
    def __call__(self, batch):
        import pyarrow as pa

        o = self.options
        keys, ns, gidx_out, texts_out = [], [], [], []
        columns = batch.to_pydict()
        for key, lang, n, gidxs, recs in zip(columns["key"], columns["lang"], columns["n"], columns["gidx"], columns["recs"]):
            decoded = [json.loads(r) for r in recs]
            keywords = self._extractor(lang).extract_keywords_batch(
                [d[0] for d in decoded],
                method=o["method"],
                top_k=o["top_k"],
                batch_size=o["batch_size"],
                with_scores=True,
            )
            lines = [
                json.dumps({"id": d[1], "keywords": [[p, round(s, 6)] for p, s in kws]}, ensure_ascii=False)
                for d, kws in zip(decoded, keywords)
            ]
            keys.append(key)
            ns.append(n)
            gidx_out.append(gidxs)
            texts_out.append("".join(line + "\n" for line in lines))
        return pa.table({
            "key": pa.array(keys, pa.string()),
            "n": pa.array(ns, pa.int64()),
            "gidx": pa.array(gidx_out, pa.list_(pa.int64())),
            "text": pa.array(texts_out, pa.string()),
        })


_IDF_EXTRACTORS: dict[str, Any] = {}


@for_driver
def count_idf(batch, lang: str):
    """Ray Data task: document frequencies of each shard (fit_idf of the CLI's extractor)."""
    import pyarrow as pa

    from keyatten_lite import KeyAttenExtractor

    out = []
    for spec in batch.column("spec").to_pylist():
        shard = json.loads(spec)
        info: dict[str, Any] = {"shard": shard["id"], "docs": 0, "lines": 0, "df": {}, "error": None}
        try:
            records, _, n_lines = shard_records(shard, lang, cache=False)
        except RecordError as exc:
            info["error"] = [exc.where, exc.message]
            out.append(json.dumps(info))
            continue
        info["lines"] = n_lines
        if records:
            ex = _IDF_EXTRACTORS.get(lang)
            if ex is None:
                ex = _IDF_EXTRACTORS[lang] = KeyAttenExtractor(language=lang)
            ex.fit_idf([r["text"] for r in records])
            info["docs"] = ex.idf.doc_count
            info["df"] = ex.idf.document_frequency
        out.append(json.dumps(info, ensure_ascii=True))  # ASCII: keys may hold lone surrogates
    return pa.table({"info": pa.array(out, pa.string())})
