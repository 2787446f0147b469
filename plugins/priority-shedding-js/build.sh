#!/usr/bin/env bash
# Builds the priority-shedding JS plugin: plugins/priority-shedding-js/build.sh [OUT.wasm]
# (default target/plugins/priority-shedding-js.wasm). Tools: .ci/install-plugin-toolchains js.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/../../target/plugins/priority-shedding-js.wasm}"
exec node "$here/../../sdk/js/build.mjs" "$here/plugin.js" "$out"
