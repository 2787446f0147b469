#!/bin/sh
# Builds Levee and the harness in release mode, then runs the load benchmark.
# Usage: gateway/bench/run.sh [--duration 10s] [--connections 50] [--out FILE] [...]
# (`gateway/bench/run.sh --help` lists every option.)
# The resilience scenarios: gateway/bench/run.sh resilience [...] and gateway/bench/run.sh chaos [...];
# the plugin scenario: gateway/bench/run.sh plugins [...] (needs the example plugins built);
# the soak: gateway/bench/run.sh soak [...] (10 minutes; needs the tagger plugin built).
set -eu
cd "$(dirname "$0")/../.."

case "${1:-}" in
  resilience) tools="wrk taskset" ;;
  chaos) tools="taskset" ;;
  plugins) tools="wrk taskset" ;;
  soak) tools="taskset" ;;
  *) tools="wrk h2load nginx taskset prlimit" ;;
esac
for tool in $tools; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "run.sh: '$tool' is missing; install the tools first:" >&2
    echo "  apt-get install -y wrk nghttp2-client nginx util-linux" >&2
    exit 1
  fi
done

cargo build --release -p levee -p levee-bench
exec ./target/release/levee-bench "$@"
