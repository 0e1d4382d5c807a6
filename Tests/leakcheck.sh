#!/bin/sh
# Runs the model loader (and the data readers and writers around it) under valgrind through the
# CLI: valid models, onnxruntime's training graph, and the error paths of damaged files, where
# protobuf-c must free a half-built tree. Fails on any memory error or definite leak.
#
# valgrind 3.19 cannot read the DWARF 5 that swiftc emits, so it runs on a copy of the binary
# without debug info (symbols stay, line numbers go). The Swift runtime's metadata caches show
# up as "possibly lost"/"still reachable"; only "definitely lost" counts as a leak. Tests/valgrind.supp
# lists the known leaks of dependencies (ZIPFoundation's file opening).
#
# Usage: Tests/leakcheck.sh            (builds .build/debug/onnx-train if it is missing)
#        ONNX_TRAIN_BIN=path Tests/leakcheck.sh
set -eu
cd "$(dirname "$0")/.."
BIN=${ONNX_TRAIN_BIN:-.build/debug/onnx-train}
[ -x "$BIN" ] || swift build --product onnx-train
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
objcopy --strip-debug "$BIN" "$WORK/onnx-train"
D=Tests/Fixtures/data

# Damaged inputs for the error paths: a truncated model, a model with a flipped byte, random bytes.
head -c 120 "$D/tiny.onnx" > "$WORK/truncated.onnx"
python3 - "$D/tiny.onnx" "$WORK/flipped.onnx" <<'PY' 2>/dev/null || cp "$D/tiny.onnx" "$WORK/flipped.onnx"
import sys
b = bytearray(open(sys.argv[1], "rb").read()); b[40] ^= 0xFF; open(sys.argv[2], "wb").write(b)
PY
head -c 4096 /dev/urandom > "$WORK/random.onnx"

failures=0
check() {
    expected=$1; shift
    status=0
    valgrind --quiet --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite --error-exitcode=99 --suppressions=Tests/valgrind.supp \
        "$WORK/onnx-train" "$@" > "$WORK/stdout" 2> "$WORK/stderr" || status=$?
    if [ "$status" = 99 ]; then
        echo "FAIL (valgrind): onnx-train $*"; grep -v "^onnx-train: error" "$WORK/stderr" | head -60; failures=$((failures + 1))
    elif [ "$expected" != any ] && [ "$status" != "$expected" ]; then
        echo "FAIL (exit $status, expected $expected): onnx-train $*"; tail -3 "$WORK/stderr"; failures=$((failures + 1))
    else
        echo "ok   (exit $status): onnx-train $*"
    fi
}

check 0 inspect "$D/tiny.onnx"
check 0 inspect Tests/Fixtures/training/gpt_ce_adamw/training_model.onnx
check 0 infer "$D/tiny.onnx" --inputs "$D/tiny_feeds.npz" --output "$WORK/out.npz"
check 0 infer "$D/tiny.onnx" --input "x=$D/tiny_x.npy" --output "$WORK/pb"
check 0 infer "$D/tiny.onnx" --input "x=$D/pb/input_0.pb" --output "$WORK/out.safetensors"
check 4 inspect "$WORK/truncated.onnx"
check any inspect "$WORK/flipped.onnx"
check 4 inspect "$WORK/random.onnx"
check 3 inspect "$WORK/missing.onnx"
check 6 infer "$D/nokernel.onnx" --input "x=$D/tiny_x.npy"
check 4 infer "$D/tiny.onnx" --inputs "$D/bad_member.npz"
check 5 infer "$D/tiny.onnx" --input "x=$D/int64.npy"
for crafted in huge_float_data huge_sparse overflowing_sparse sparse_index_out_of_range; do
    check 4 inspect "$D/crafted/$crafted.onnx"
done
check 4 infer "$D/tiny.onnx" --input "x=$D/truncated.npy"
check 4 infer "$D/tiny.onnx" --inputs "$D/overrun.safetensors"

if [ "$failures" -ne 0 ]; then echo "leakcheck: $failures failing run(s)"; exit 1; fi
echo "leakcheck: no memory errors or definite leaks"
