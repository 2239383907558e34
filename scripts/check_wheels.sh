#!/usr/bin/env bash
# Do the runtime dependencies install from wheels on Linux aarch64 and macOS arm64 (CPython 3.11)?
#
#   bash scripts/check_wheels.sh            # table on stdout; exit 1 if any dependency does not resolve
#   GLIBC=2_34 MACOS="11_0 15_0" bash scripts/check_wheels.sh
#
# For each dependency in pyproject.toml's [project] dependencies and each target it runs
#   pip download --only-binary :all: --platform ... --python-version 3.11 --implementation cp -d TMP REQ
# (with the dependency's own dependencies, so the whole tree must come as wheels). Pure-Python
# sdist-only projects (jieba) are checked once with `pip download --no-deps --no-binary :all:`: they
# build on any platform. Nothing is installed; downloads go to a temporary folder that is removed.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
PYVER="${PYVER:-3.11}"
GLIBC="${GLIBC:-2_28}"          # newest glibc the Linux target has (2_28: RHEL 8, Debian 10+, Ubuntu 20.04+)
MACOS="${MACOS:-11_0 14_0}"     # macOS versions to check (11_0: the first arm64 release)
SDIST_ONLY="${SDIST_ONLY:-jieba}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/check_wheels.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

mapfile -t REQS < <("$PYTHON" - <<'EOF'
import tomllib
with open("pyproject.toml", "rb") as fh:
    for req in tomllib.load(fh)["project"]["dependencies"]:
        print(req)
EOF
)

# target label -> --platform flags (pip also accepts older manylinux/macOS tags than the ones named)
declare -A TARGETS
TARGETS["linux-aarch64 (manylinux_${GLIBC})"]="--platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux_${GLIBC}_aarch64"
for v in $MACOS; do
    TARGETS["macos-arm64 (macosx_${v})"]="--platform macosx_${v}_arm64"
done

name_of() { echo "$1" | sed -E 's/[<>=!~; \[].*//'; }
is_sdist_only() { local n; n="$(name_of "$1")"; for s in $SDIST_ONLY; do [ "${n,,}" = "${s,,}" ] && return 0; done; return 1; }
size_of() { "$PYTHON" -c 'import os,sys; print(f"{os.path.getsize(sys.argv[1])/2**20:.1f} MB")' "$1"; }

failures=0
rows=()
echo "pip: $("$PYTHON" -m pip --version | cut -d' ' -f1-2); python-version $PYVER; $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "dependencies: ${REQS[*]}"
echo

for req in "${REQS[@]}"; do
    if is_sdist_only "$req"; then
        dir="$TMP/sdist/$(name_of "$req")"
        mkdir -p "$dir"
        cmd="pip download --no-deps --no-binary :all: -d TMP '$req'"
        if "$PYTHON" -m pip download -q --no-deps --no-binary :all: -d "$dir" "$req" >"$dir.log" 2>&1; then
            f="$(ls "$dir" | head -1)"
            rows+=("| any (pure Python sdist) | \`$req\` | ok | \`$f\` ($(size_of "$dir/$f")) | - |")
        else
            rows+=("| any (pure Python sdist) | \`$req\` | FAILED | $(tail -1 "$dir.log") | - |")
            failures=$((failures + 1))
        fi
        continue
    fi
    for label in $(printf '%s\n' "${!TARGETS[@]}" | sort | tr ' ' '#'); do
        label="${label//#/ }"
        dir="$TMP/$(echo "$label" | tr -c 'A-Za-z0-9_.\n-' '_')/$(name_of "$req")"
        mkdir -p "$dir"
        # shellcheck disable=SC2086
        if "$PYTHON" -m pip download -q --only-binary :all: ${TARGETS[$label]} --python-version "$PYVER" \
            --implementation cp -d "$dir" "$req" >"$dir.log" 2>&1; then
            main="" deps=()
            n="$(name_of "$req" | tr '-' '_')"
            for f in $(ls "$dir" | sort); do
                g="${f,,}"
                if [ -z "$main" ] && [[ "$g" == "${n,,}"-* ]]; then
                    main="\`$f\` ($(size_of "$dir/$f"))"
                else
                    deps+=("${f%%-[0-9]*}")
                fi
            done
            rows+=("| $label | \`$req\` | ok | $main | ${deps[*]:-none} |")
        else
            err="$(grep -E 'ERROR' "$dir.log" | head -1)"
            rows+=("| $label | \`$req\` | FAILED | ${err:-see pip output} | - |")
            failures=$((failures + 1))
        fi
    done
done

echo "| target | requirement | resolved | wheel (size) | dependency wheels also resolved |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
if [ "$failures" -gt 0 ]; then
    echo "$failures dependency/target pair(s) did not resolve to wheels"
    exit 1
fi
echo "every runtime dependency resolves on every target"
