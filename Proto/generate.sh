#!/usr/bin/env bash
# Regenerates the protobuf-c code for ONNX's schema into Sources/COnnxProto.
# The output is committed; Tests check that it matches what this script produces.
#   Proto/generate.sh            write the generated files
#   Proto/generate.sh --check    exit 1 if the committed copy differs from a fresh generation
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
command -v protoc-c >/dev/null || { echo "generate.sh: protoc-c not found (apt-get install protobuf-c-compiler)" >&2; exit 2; }
(cd "$root/Proto" && protoc-c --c_out="$out" onnx.proto onnx-data.proto)
dest="$root/Sources/COnnxProto"
if [[ "${1:-}" == "--check" ]]; then
  status=0
  for f in onnx.pb-c onnx-data.pb-c; do
    cmp -s "$out/$f.c" "$dest/$f.c" || { echo "stale: Sources/COnnxProto/$f.c (run Proto/generate.sh)"; status=1; }
    cmp -s "$out/$f.h" "$dest/include/$f.h" || { echo "stale: Sources/COnnxProto/include/$f.h (run Proto/generate.sh)"; status=1; }
  done
  exit $status
fi
mkdir -p "$dest/include"
for f in onnx.pb-c onnx-data.pb-c; do
  cp "$out/$f.c" "$dest/$f.c"
  cp "$out/$f.h" "$dest/include/$f.h"
done
echo "generated Sources/COnnxProto from Proto/onnx.proto and Proto/onnx-data.proto"
