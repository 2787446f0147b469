#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: deterministic for one
# binary, so it judges a change to the request path where wall-clock rounds on a shared VM
# cannot. Levee (`--workers 1`, access log off unless ACCESS_LOG=1) proxies to one
# `levee-bench upstream`; 500 requests warm up, then the counters are zeroed and 4,000
# requests (`h2load --h1 -c 10`) are counted.
#
#   gateway/bench/callgrind.sh [LEVEE] [BENCH]
#     LEVEE  the levee binary   (default target/release/levee)
#     BENCH  the harness binary (default target/release/levee-bench), for its upstream
#
# Needs valgrind and h2load: apt-get install -y valgrind nghttp2-client. Prints one line:
# `instructions per request: N`. Takes a minute or two.
set -euo pipefail
cd "$(dirname "$0")/../.."

levee=${1:-target/release/levee}
bench=${2:-target/release/levee-bench}
requests=${REQUESTS:-4000}
warmup=${WARMUP:-500}
access_log=false
[[ ${ACCESS_LOG:-0} == 1 ]] && access_log=true

work=$(mktemp -d)
cleanup() {
  local pids
  pids=$(jobs -p)
  [[ -n $pids ]] && kill $pids 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Waits until file $1 has a line matching $2, and prints that line.
wait_for() {
  local file=$1 pattern=$2
  for _ in $(seq 600); do
    if grep -m1 -E "$pattern" "$file" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "callgrind.sh: timed out waiting for '$pattern' in $file:" >&2
  cat "$file" >&2
  return 1
}

"$bench" upstream --port 0 --threads 1 >"$work/upstream.out" 2>&1 &
upstream=$(wait_for "$work/upstream.out" '^listening on ' | awk '{print $3}')

cat >"$work/levee.yaml" <<YAML
listeners:
  - name: bench
    address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
routes:
  - name: route-0
    match: { path_prefix: "/" }
    cluster: cluster-0
clusters:
  - name: cluster-0
    lb: round-robin
    max_idle_per_endpoint: 64
    endpoints:
      - { address: "$upstream" }
shutdown: { drain_delay: 0s, drain_timeout: 1s }
log: { level: info, access_log: $access_log }
YAML

valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
  "$levee" run -c "$work/levee.yaml" --workers 1 >/dev/null 2>"$work/levee.err" &
valgrind_pid=$!
bound=$(wait_for "$work/levee.err" '"message":"listener bound"')
address=$(sed -E 's/.*"address":"([^"]+)".*/\1/' <<<"$bound")

h2load --h1 -n "$warmup" -c 10 "http://$address/" >/dev/null
callgrind_control -z "$valgrind_pid" >/dev/null 2>&1
h2load --h1 -n "$requests" -c 10 "http://$address/" >"$work/h2load.out"
if ! grep -q " 0 failed, 0 errored" "$work/h2load.out"; then
  echo "callgrind.sh: some requests failed:" >&2
  grep "requests:" "$work/h2load.out" >&2
fi
callgrind_control -d "$valgrind_pid" >/dev/null 2>&1

# The dump after zeroing is the one with the highest part number.
dump=$(ls -v "$work"/callgrind.out.* | tail -1)
total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
echo "instructions per request: $((total / requests))"
