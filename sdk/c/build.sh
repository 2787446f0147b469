#!/usr/bin/env bash
# Builds a Levee policy plugin written in C into a WebAssembly component.
#
#   sdk/c/build.sh OUT.wasm SOURCE.c [SOURCE.c ...]
#
# 1. `wit-bindgen c` generates plugin.h / plugin.c / plugin_component_type.o from sdk/wit (world
#    `plugin`) into a temporary directory, on every build, so the bindings cannot drift from the
#    contract (nothing generated is committed).
# 2. clang compiles the sources, the bindings and the SDK helpers (levee.c, levee_json.c) for
#    wasm32-wasi as a reactor (no `main`), linked against Debian's wasi-libc.
# 3. `wasm-tools component new` wraps the core module into a component.
#
# A plugin gets no WASI from the gateway, so the core module must not import any: the build
# stops if it does (printf to stdout, files, clocks, getenv... pull WASI in; use levee_log and
# levee_now_ms). LEVEE_C_ALLOW_WASI=1 builds it anyway, through the preview1 reactor adapter
# from the crates.io package wasi-preview1-component-adapter-provider (fetched with cargo);
# the gateway must then link the WASI interfaces it imports.
#
# Environment: CC (default clang), CFLAGS (added after the defaults), WIT_BINDGEN, WASM_TOOLS.
# Tools: .ci/install-plugin-toolchains c.
set -euo pipefail

ADAPTER_CRATE=wasi-preview1-component-adapter-provider
ADAPTER_VERSION=48.0.8

if [[ $# -lt 2 ]]; then
  echo "usage: $0 OUT.wasm SOURCE.c [SOURCE.c ...]" >&2
  exit 2
fi
sdk_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wit_dir="$sdk_dir/../wit"
out="$1"
shift
sources=("$@")

export PATH="${CARGO_INSTALL_ROOT:-$HOME/.cargo}/bin:$PATH"
cc="${CC:-clang}"
wit_bindgen="${WIT_BINDGEN:-wit-bindgen}"
wasm_tools="${WASM_TOOLS:-wasm-tools}"
for tool in "$cc" "$wit_bindgen" "$wasm_tools"; do
  if ! command -v "$tool" >/dev/null; then
    echo "$0: $tool not found: run .ci/install-plugin-toolchains c" >&2
    exit 1
  fi
done

work="$(mktemp -d "${TMPDIR:-/tmp}/levee-c-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# 1. Bindings.
if ! bindgen_log="$("$wit_bindgen" c "$wit_dir" --world plugin --out-dir "$work/gen" 2>&1)"; then
  echo "$bindgen_log" >&2
  exit 1
fi

# 2. Core module. -mexec-model=reactor: exports `_initialize` (constructors) instead of `_start`.
# --no-entry is implied for reactors; --export-dynamic is not needed (the bindings mark their
# exports with export_name attributes).
# shellcheck disable=SC2086 # CFLAGS is a list of flags.
"$cc" --target=wasm32-wasi -mexec-model=reactor -std=c11 -O2 \
  -Wall -Wextra -Werror -Wno-unused-parameter \
  -I "$work/gen" -I "$sdk_dir" \
  ${CFLAGS:-} \
  -Wl,--strip-debug \
  -o "$work/core.wasm" \
  "${sources[@]}" "$sdk_dir/levee.c" "$sdk_dir/levee_json.c" \
  "$work/gen/plugin.c" "$work/gen/plugin_component_type.o"

# 3. Component.
adapt=()
wasi_imports="$("$wasm_tools" print "$work/core.wasm" | grep -o '(import "wasi_snapshot_preview1" "[^"]*"' |
  sed 's/.*" "//; s/"$//' | sort -u | paste -sd ' ' || true)"
if [[ -n "$wasi_imports" ]]; then
  if [[ "${LEVEE_C_ALLOW_WASI:-0}" != "1" ]]; then
    echo "$0: the module imports WASI ($wasi_imports), which a Levee plugin does not get." >&2
    echo "  Remove what calls it (stdio, files, clocks, environment), or set LEVEE_C_ALLOW_WASI=1." >&2
    exit 1
  fi
  # The adapter ships inside a crates.io package: let cargo fetch it into its registry cache.
  mkdir -p "$work/adapter/src"
  cat >"$work/adapter/Cargo.toml" <<EOF
[package]
name = "levee-fetch-adapter"
version = "0.0.0"
edition = "2021"
[dependencies]
$ADAPTER_CRATE = "=$ADAPTER_VERSION"
[workspace]
EOF
  : >"$work/adapter/src/lib.rs"
  (cd "$work/adapter" && env -u CARGO_TARGET_DIR cargo fetch --quiet)
  adapter="$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path "*/$ADAPTER_CRATE-$ADAPTER_VERSION/*" \
    -name 'wasi_snapshot_preview1.reactor.wasm' | head -n 1)"
  if [[ -z "$adapter" ]]; then
    echo "$0: $ADAPTER_CRATE $ADAPTER_VERSION has no reactor adapter" >&2
    exit 1
  fi
  echo "$0: warning: the module imports WASI ($wasi_imports); adapting it" >&2
  adapt=(--adapt "wasi_snapshot_preview1=$adapter")
fi
mkdir -p "$(dirname "$out")"
"$wasm_tools" component new "$work/core.wasm" "${adapt[@]}" -o "$out"

if ! "$wasm_tools" component wit "$out" | grep -q 'export levee:policy/policy@0.1.0;'; then
  echo "$0: $out does not export levee:policy/policy@0.1.0" >&2
  exit 1
fi
