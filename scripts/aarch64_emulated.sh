#!/usr/bin/env bash
# keyatten-lite on linux/arm64 under emulation, compared with x86 (issue 13, item 6). Not in CI.
#
# Needs root, Debian's mmdebstrap and qemu-user-static, and the packs of the default bundles:
#   apt-get install -y mmdebstrap qemu-user-static binfmt-support
#   keyatten-lite models pack --language en -o /tmp/en.tar.gz; keyatten-lite models pack --language zh -o /tmp/zh.tar.gz
#   bash scripts/aarch64_emulated.sh [WORKDIR] [N_DOCS]
# What it does: builds a Debian bookworm arm64 root (python 3.11), downloads the runtime's aarch64 wheels on
# the host (pip download --platform manylinux2014_aarch64; jieba is built as a pure-Python wheel), installs
# keyatten-lite from its wheel inside the root with --no-index (no torch, no network), installs the packs,
# extracts N documents of each language there and here, and compares the keyword lists. The result
# goes to WORKDIR/aarch64-result.json and is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/work/arm64}
N=${2:-20}
DATA=${KEYATTEN_LITE_DATA:-../shared/data}
ROOT="$WORK/root"
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$WORK"
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
if [ ! -x "$ROOT/usr/bin/python3" ]; then
  mmdebstrap --arch=arm64 --variant=apt --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$ROOT"
fi
mkdir -p "$ROOT/work/wheels" "$ROOT/work/packs"
rm -f "$ROOT"/work/wheels/*
"$PY" -m pip wheel -q --no-deps -w "$ROOT/work/wheels" .
"$PY" -m pip wheel -q --no-deps -w "$ROOT/work/wheels" "jieba>=0.42.1"
# The runtime's dependencies (pyproject.toml), as aarch64 wheels for CPython 3.11.
REQS=$("$PY" -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))")
REQS_NO_JIEBA=$(for r in $REQS; do case "$r" in jieba*) ;; *) printf '%s ' "$r";; esac; done)
# shellcheck disable=SC2086
"$PY" -m pip download -q --only-binary :all: --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
    --platform manylinux_2_28_aarch64 --python-version 3.11 --implementation cp -d "$ROOT/work/wheels" $REQS_NO_JIEBA
cp /tmp/en.tar.gz /tmp/zh.tar.gz "$ROOT/work/packs/"
# The same documents on both sides: the first N of Inspec and of CSL test.
"$PY" - "$DATA" "$N" "$ROOT/work/docs.jsonl" <<'EOF'
import json, sys
data, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(out, "w", encoding="utf-8") as f:
    for rel in ("en/inspec.jsonl", "zh/csl_test.jsonl"):
        for line in list(open(f"{data}/{rel}", encoding="utf-8"))[:n]:
            d = json.loads(line)
            f.write(json.dumps({"id": d["id"], "text": d["text"], "lang": d["lang"]}, ensure_ascii=False) + "\n")
EOF
cat > "$ROOT/work/run.sh" <<'EOF'
set -euo pipefail
export KEYATTEN_LITE_HOME=/work/home
[ -x /venv/bin/python ] || python3 -m venv /venv
/venv/bin/pip install -q --no-index --find-links /work/wheels keyatten-lite
/venv/bin/python -c "import platform, onnxruntime, numpy; print(platform.machine(), onnxruntime.__version__, numpy.__version__)"
/venv/bin/python -c "import importlib.util as u; print('torch installed:', u.find_spec('torch') is not None)"
for p in /work/packs/*.tar.gz; do /venv/bin/keyatten-lite models install "$p" --force; done
start=$(date +%s.%N)
/venv/bin/keyatten-lite extract -i /work/docs.jsonl -o /work/arm64-out.jsonl --threads 1
echo "seconds $(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || true)"
EOF
# /sys stays unmounted: with the host's /sys, onnxruntime's cpuinfo reads the x86 CPU description and
# the emulated process segfaults on import; without it, it warns ("cpuinfo_initialize failed") and runs.
( time chroot "$ROOT" /bin/bash /work/run.sh ) 2>&1 | tee "$WORK/arm64-run.log"
# x86 with the same packs, in a temporary home.
X86_HOME=$(mktemp -d)
for p in /tmp/en.tar.gz /tmp/zh.tar.gz; do KEYATTEN_LITE_HOME=$X86_HOME .venv/bin/keyatten-lite models install "$p" >/dev/null; done
KEYATTEN_LITE_HOME=$X86_HOME .venv/bin/keyatten-lite extract -i "$ROOT/work/docs.jsonl" -o "$WORK/x86-out.jsonl"
rm -rf "$X86_HOME"
"$PY" - "$ROOT/work/arm64-out.jsonl" "$WORK/x86-out.jsonl" "$WORK/aarch64-result.json" <<'EOF'
import json, sys
arm = {r["id"]: r["keywords"] for r in map(json.loads, open(sys.argv[1], encoding="utf-8"))}
x86 = {r["id"]: r["keywords"] for r in map(json.loads, open(sys.argv[2], encoding="utf-8"))}
same_lists = sum([p for p, _ in arm[i]] == [p for p, _ in x86[i]] for i in x86)
same_sets = sum({p for p, _ in arm[i]} == {p for p, _ in x86[i]} for i in x86)
diff = max((abs(a[1] - b[1]) for i in x86 for a, b in zip(arm[i], x86[i]) if a[0] == b[0]), default=0.0)
result = {"documents": len(x86), "same_ids": sorted(arm) == sorted(x86), "same_keyword_lists": same_lists,
          "same_keyword_sets": same_sets, "max_abs_score_diff_same_phrase": diff}
json.dump(result, open(sys.argv[3], "w"), indent=2)
print(json.dumps(result))
EOF
