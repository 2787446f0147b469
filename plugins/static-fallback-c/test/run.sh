#!/usr/bin/env bash
# Native tests of the static-fallback C plugin under AddressSanitizer + LeakSanitizer (no Wasm):
# generates the bindings, compiles them, the SDK, the plugin and test/native_test.c for the
# build machine, and runs the result. Needs a C compiler with ASan (clang or gcc) and wit-bindgen.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sdk="$here/../../../sdk"
export PATH="${CARGO_INSTALL_ROOT:-$HOME/.cargo}/bin:$PATH"
work="$(mktemp -d "${TMPDIR:-/tmp}/levee-c-test.XXXXXX")"
trap 'rm -rf "$work"' EXIT
if ! log="$("${WIT_BINDGEN:-wit-bindgen}" c "$sdk/wit" --world plugin --out-dir "$work/gen" --no-object-file 2>&1)"; then
  echo "$log" >&2
  exit 1
fi
# The generated bindings carry Wasm import/export attributes, which a native compiler ignores.
# shellcheck disable=SC2054 # the comma belongs to -fsanitize.
cc=("${CC:-cc}" -std=c11 -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer
  -I "$work/gen" -I "$sdk/c")
"${cc[@]}" -w -c "$work/gen/plugin.c" -o "$work/bindings.o"
# The component-type object is Wasm-only; its link anchor is a no-op natively.
echo 'void __component_type_object_force_link_plugin(void) {}' >"$work/anchor.c"
"${cc[@]}" -Wall -Wextra -Werror -Wno-unused-parameter \
  "$here/native_test.c" "$here/../plugin.c" "$sdk/c/levee.c" "$sdk/c/levee_json.c" "$work/bindings.o" "$work/anchor.c" \
  -o "$work/native_test"
ASAN_OPTIONS=detect_leaks=1 "$work/native_test"
