#!/usr/bin/env bash
# Builds the static-fallback C plugin: plugins/static-fallback-c/build.sh [OUT.wasm]
# (default target/plugins/static-fallback-c.wasm). Tools: .ci/install-plugin-toolchains c.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/../../target/plugins/static-fallback-c.wasm}"
exec "$here/../../sdk/c/build.sh" "$out" "$here/plugin.c"
