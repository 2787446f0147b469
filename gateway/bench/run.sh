#!/bin/sh
# Builds Levee and the harness in release mode, then runs the load benchmark.
# Usage: gateway/bench/run.sh [--duration 10s] [--connections 50] [--out FILE] [...]
# (`gateway/bench/run.sh --help` lists every option.)
set -eu
cd "$(dirname "$0")/../.."

for tool in wrk h2load nginx taskset prlimit; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "run.sh: '$tool' is missing; install the tools first:" >&2
    echo "  apt-get install -y wrk nghttp2-client nginx util-linux" >&2
    exit 1
  fi
done

cargo build --release -p levee -p levee-bench
exec ./target/release/levee-bench "$@"
