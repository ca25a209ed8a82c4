#!/usr/bin/env bash
# The bridge's network benchmarks, in the peers' BENCH format:
#   echo_roundtrips  examples/echo_server under the peers' echo_client
#                    (64 connections, 64-byte ping-pong, DURATION s)
#   http_hello       examples/http_server under wrk -t1 -c64 -dDURATION s
# Needs ../shared/peers (for echo_client) and wrk; skips what is missing.
#   bench/bench_io.sh [build-dir]
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
peers=${PEERS:-$here/../shared/peers}
pb=${PEERS_BUILD:-${TMPDIR:-/tmp}/weft-peers-build}
export DURATION=${DURATION:-5}

serve() { # serve BIN: start a server example on a free port; sets pid, port
  local out
  out=$(mktemp)
  "$1" 0 >"$out" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    grep -q "listening on" "$out" && break
    sleep 0.05
  done
  port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$out")
  rm -f "$out"
}

if [ -d "$peers" ] && make -s -C "$peers" B="$pb" "$pb/echo_client" >&2; then
  serve "$build/examples/echo_server"
  CONNS=64 "$pb/echo_client" "$port" weft
  kill "$pid"
  wait "$pid" 2>/dev/null
else
  echo "bench_io: no peers' echo_client; echo_roundtrips skipped" >&2
fi
if command -v wrk >/dev/null; then
  serve "$build/examples/http_server"
  rps=$(wrk -t1 -c64 -d"${DURATION}s" "http://127.0.0.1:$port/" |
    awk '/Requests\/sec/ {print $2}')
  kill "$pid"
  wait "$pid" 2>/dev/null
  echo "BENCH name=http_hello impl=weft value=${rps:-0} unit=req/s"
else
  echo "bench_io: wrk not installed; http_hello skipped" >&2
fi
