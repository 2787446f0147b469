#!/usr/bin/env bash
# Builds the serve-stale Python plugin: plugins/serve-stale-py/build.sh [OUT.wasm]
# (default target/plugins/serve-stale-py.wasm). Tools: .ci/install-plugin-toolchains py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/../../target/plugins/serve-stale-py.wasm}"
exec "$here/../../sdk/python/build.sh" "$here" serve_stale "$out"
