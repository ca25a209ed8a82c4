#!/usr/bin/env bash
# echo_check.sh ECHO_SERVER: starts the example echo server on a free port,
# talks to it over a few connections with bash's /dev/tcp, checks every
# line comes back, and stops it. Finishes in about a second.
set -u
server=$1
out=$(mktemp)
"$server" 0 2 >"$out" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$out"' EXIT

port=
for _ in $(seq 100); do
  port=$(sed -n 's/^echo_server: listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$out")
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
if [ -z "$port" ]; then
  echo "echo_check: server did not start:"; cat "$out"; exit 1
fi

for conn in 1 2 3; do
  exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
  for i in 1 2 3 4 5; do
    msg="connection $conn line $i $(head -c 600 /dev/zero | tr '\0' x)"
    printf '%s\n' "$msg" >&3
    IFS= read -r -t 5 line <&3 || { echo "echo_check: no reply"; exit 1; }
    [ "$line" = "$msg" ] || { echo "echo_check: wrong reply"; exit 1; }
  done
  exec 3>&-
done
echo "echo_check: ok (port $port)"
