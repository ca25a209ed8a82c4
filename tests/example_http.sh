#!/usr/bin/env bash
# Runs examples/http_server on a free port; checks a keep-alive exchange of
# several requests on one connection (hello, /fib/N fanned out to jobs, a
# 404, a pipelined pair), then stops it with SIGTERM and checks that it
# shut down cleanly.
set -euo pipefail
. "$(dirname "$0")/example_lib.sh"
start_server "$1"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' >&3
printf 'GET /fib/27 HTTP/1.1\r\nHost: x\r\n\r\n' >&3
printf 'GET /nope HTTP/1.1\r\nHost: x\r\n\r\n' >&3
printf 'GET / HTTP/1.1\r\n\r\nGET /fib/10 HTTP/1.1\r\nConnection: close\r\n\r\n' >&3
timeout 20 cat <&3 >"$out.resp"
exec 3>&-
# Bodies end without a newline, so count matches, not lines.
[ "$(grep -o 'HTTP/1.1 200 OK' "$out.resp" | wc -l)" = 4 ]
grep -q "HTTP/1.1 404 Not Found" "$out.resp"
grep -q "fib(27) = 196418" "$out.resp"
grep -q "fib(10) = 55" "$out.resp"
[ "$(grep -o 'Hello, World!' "$out.resp" | wc -l)" = 2 ]
kill -TERM "$pid"
wait "$pid"
grep -q "http_server: stopped (signal 15)" "$out"
echo "http_server: ok"
