#!/bin/sh
# Installs weft from the build tree into a scratch prefix, then builds
# tests/install against it with CMake (find_package) and with pkg-config.
set -eu
build=$1
src=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
cmake -S "$src/tests/install" -B "$tmp/b" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  >/dev/null
cmake --build "$tmp/b" >/dev/null
"$tmp/b/use_weft"
libdir=$(ls -d "$tmp"/prefix/lib*/pkgconfig | head -n 1)
PKG_CONFIG_PATH=$libdir cc -o "$tmp/pc" "$src/tests/install/main.c" \
  $(PKG_CONFIG_PATH=$libdir pkg-config --cflags --libs weft) \
  -Wl,-rpath,"$(dirname "$libdir")"
"$tmp/pc"
