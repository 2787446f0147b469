#!/usr/bin/env bash
# Builds the C, JavaScript and Python example plugins into OUTDIR:
#
#   sdk/build-all.sh OUTDIR [c] [js] [py]      # all three when no language is named
#
# producing OUTDIR/static-fallback-c.wasm, OUTDIR/priority-shedding-js.wasm and
# OUTDIR/serve-stale-py.wasm, and printing each one's size and build time. The tools come from
# .ci/install-plugin-toolchains. Exits non-zero when any build fails.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 OUTDIR [c] [js] [py]" >&2
  exit 2
fi
sdk_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$sdk_dir")"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
shift
langs=("$@")
if [[ ${#langs[@]} -eq 0 ]]; then
  langs=(c js py)
fi

build() {
  local name=$1
  shift
  local start=${EPOCHREALTIME/./} elapsed_ms
  echo "== $name" >&2
  if ! "$@"; then
    echo "FAILED $name" >&2
    exit 1
  fi
  elapsed_ms=$(((${EPOCHREALTIME/./} - start) / 1000))
  summary+=("$(printf '%-24s %10d bytes %4d.%ds' "$name.wasm" "$(stat -c %s "$out/$name.wasm")" \
    $((elapsed_ms / 1000)) $((elapsed_ms % 1000 / 100)))")
}

summary=()
for lang in "${langs[@]}"; do
  case "$lang" in
    c)
      build static-fallback-c "$root/plugins/static-fallback-c/build.sh" "$out/static-fallback-c.wasm"
      ;;
    js)
      build priority-shedding-js "$root/plugins/priority-shedding-js/build.sh" \
        "$out/priority-shedding-js.wasm"
      ;;
    py)
      build serve-stale-py "$root/plugins/serve-stale-py/build.sh" "$out/serve-stale-py.wasm"
      ;;
    *)
      echo "$0: unknown language $lang (c, js or py)" >&2
      exit 2
      ;;
  esac
done
printf '%s\n' "${summary[@]}"
