#!/usr/bin/env bash
# Builds every Rust plugin in this workspace for wasm32-wasip2 (release profile: opt-level 3,
# LTO, stripped) and copies the components to a directory, printing their sizes.
#
#   plugins/build.sh [OUT_DIR]        # OUT_DIR defaults to target/plugins/wasm/
#
# Files are named after the plugin's folder: plugins/bad-headers -> OUT_DIR/bad-headers.wasm.
# The build uses its own target dir (target/plugins) so it never waits on the gateway's lock.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/target/plugins/wasm}"
target_dir="$root/target/plugins"

cargo build --manifest-path "$root/plugins/Cargo.toml" --target wasm32-wasip2 --release \
  --target-dir "$target_dir"

mkdir -p "$out"
# Every member crate under plugins/ that builds a cdylib (the SDK is a plain library).
for manifest in "$root"/plugins/*/Cargo.toml; do
  dir="$(dirname "$manifest")"
  name="$(basename "$dir")"
  grep -q 'cdylib' "$manifest" || continue
  # Only this workspace's members: the C, JS and Python plugins are built elsewhere.
  grep -q "^  \"$name\"," "$root/plugins/Cargo.toml" || continue
  wasm="$target_dir/wasm32-wasip2/release/${name//-/_}.wasm"
  cp "$wasm" "$out/$name.wasm"
  printf '%8d bytes  %s\n' "$(stat -c %s "$out/$name.wasm")" "$out/$name.wasm"
done
