#!/usr/bin/env bash
# Runs examples/embed_server on a free port, asks it for a few fib values
# over TCP (bash's /dev/tcp), checks the answers, then stops it with SIGTERM
# and checks that it shut down cleanly.
set -euo pipefail
. "$(dirname "$0")/example_lib.sh"
start_server "$1"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf '10\n20\n25\nbogus\n' >&3
answers=()
for _ in 1 2 3 4; do
  IFS= read -r -t 20 line <&3
  answers+=("$line")
done
exec 3>&-
printf '%s\n' "${answers[@]}" | sort >"$out.got"
printf '%s\n' "error: send a number from 0 to 40" "fib(10) = 55" \
  "fib(20) = 6765" "fib(25) = 75025" | sort >"$out.want"
diff "$out.want" "$out.got"
rm -f "$out.got" "$out.want"
kill -TERM "$pid"
wait "$pid"
grep -q "embed_server: stopped" "$out"
echo "embed_server: ok"
