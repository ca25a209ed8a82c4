#!/usr/bin/env bash
# Builds a small tree of files (empty, small, several chunks, nested
# directories), runs examples/parallel_hash on it with --verify (which
# re-hashes everything serially and compares) and checks the file count.
set -euo pipefail
bin=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/a/b/c" "$dir/d" "$dir/empty_dir"
: >"$dir/empty"
printf 'hello\n' >"$dir/a/hello.txt"
head -c 200000 /dev/urandom >"$dir/a/b/random.bin"
head -c 65536 /dev/urandom >"$dir/a/b/c/exact_chunk"
for i in $(seq 1 40); do
  head -c $((i * 1000)) /dev/urandom >"$dir/d/f$i"
done
out=$("$bin" "$dir" --verify)
echo "$out" | tail -n 2
echo "$out" | grep -q "^44 files, "
echo "$out" | grep -q "^verify: ok$"
