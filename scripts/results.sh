#!/usr/bin/env bash
# Regenerate the measured results in docs/results/ (needs the datasets beside the checkout, ../shared/data,
# and an otherwise idle machine for the speed figures).
#
#   bash scripts/results.sh speed     # bench-inspec.*, bench-csl.*, speed.md   (~40 min on 2 cores)
#   bash scripts/results.sh quality   # test-*.json/.md/.png per dataset, test-summary.md (~2 h on 2 cores)
#
# quality.md and speed.md quote these files; the dev-set ablations in quality.md come from the dev splits
# named there, never from the test documents evaluated here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
. .venv/bin/activate
DATA=${KEYATTEN_LITE_DATA:-../shared/data}
OUT=docs/results
THREADS=${THREADS:-2}
[ -d "$DATA" ] || { echo "datasets not found in $DATA (set KEYATTEN_LITE_DATA)" >&2; exit 2; }

# The Hugging Face directories the default bundles were exported from: keyatten 0.3.1 runs on them.
source_dir() { python -c "from keyatten_lite_export.parity import source_model_dir; print(source_model_dir('$1'))"; }
EN_SRC=$(source_dir minilm-l6-en)
# keyatten 0.3.1 reads the full-vocabulary model: the trimmed bundle must give the same answers.
ZH_SRC=$(source_dir e5-small-multi)

speed() {
  keyatten-lite bench "$DATA/en/inspec.jsonl" --limit 100 --bundle minilm-l6-en --variants fp32,int8 \
      --threads 1,2 --repeats 2 --keyatten-model "$EN_SRC" -o $OUT/bench-inspec.json --plot $OUT/bench-inspec.png
  keyatten-lite bench "$DATA/zh/csl_test.jsonl" --limit 100 --bundle e5-small-zh --variants fp32,int8 \
      --threads 1,2 --repeats 2 --keyatten-model "$ZH_SRC" -o $OUT/bench-csl.json --plot $OUT/bench-csl.png
  keyatten-lite bench-report $OUT/bench-inspec.json $OUT/bench-csl.json -o $OUT/speed.md
  printf '\n![Inspec](bench-inspec.png)\n\n![CSL](bench-csl.png)\n' >> $OUT/speed.md
}

# Every attention method of the default profile, the compat path (= keyatten 0.3.1) and keyatten 0.3.1
# itself on torch, beside the classic baselines; IDF fitted on the evaluated documents (labelled).
lite_systems() {  # bundle
  local m
  for m in samrank received_attn cls_attn fusion_attn; do
    printf -- '-s lite-default:%s:%s -s lite-default:%s:%s_idf ' "$1" "$m" "$1" "$m"
  done
  printf -- '-s lite:%s:samrank_idf ' "$1"
}

quality() {
  local en zh
  en="$(lite_systems minilm-l6-en) -s keyatten:$EN_SRC:samrank_idf -s yake -s tfidf"
  zh="$(lite_systems e5-small-zh) -s keyatten:$ZH_SRC:samrank_idf -s tfidf -s yake-jieba -s jieba-textrank"
  # shellcheck disable=SC2086
  {
    keyatten-lite eval "$DATA/en/inspec.jsonl" --split inspec-first500 $en --reference yake --threads "$THREADS" \
        -o $OUT/test-inspec.json --plot $OUT/test-inspec.png
    keyatten-lite eval "$DATA/en/semeval2017.jsonl" --split semeval2017-rest $en --reference tfidf --threads "$THREADS" \
        -o $OUT/test-semeval2017.json --plot $OUT/test-semeval2017.png
    keyatten-lite eval "$DATA/en/semeval2010.jsonl" --split semeval2010-rest $en --reference tfidf --threads "$THREADS" \
        -o $OUT/test-semeval2010.json --plot $OUT/test-semeval2010.png
    keyatten-lite eval "$DATA/zh/csl_test.jsonl" $zh --reference tfidf --threads "$THREADS" \
        -o $OUT/test-csl.json --plot $OUT/test-csl.png
  }
  python scripts/quality_summary.py $OUT/test-inspec.json $OUT/test-semeval2017.json $OUT/test-semeval2010.json \
      $OUT/test-csl.json > $OUT/test-summary.md
}

case "${1:-}" in
  speed) speed ;;
  quality) quality ;;
  *) echo "usage: bash scripts/results.sh speed|quality" >&2; exit 2 ;;
esac
