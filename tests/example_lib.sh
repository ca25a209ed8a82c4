# Sourced by the example test scripts: start_server BIN starts a server
# example on a free port (argument 0), waits for its "listening on" line and
# sets $pid, $port and $out (its output file); the EXIT trap stops it.
start_server() {
  out=$(mktemp)
  trap 'kill "$pid" 2>/dev/null || true; rm -f "$out" "$out".*' EXIT
  "$1" 0 >"$out" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    grep -q "listening on" "$out" && break
    sleep 0.05
  done
  port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$out")
  [ -n "$port" ] || { cat "$out"; exit 1; }
}
