#!/usr/bin/env bash
# Runs the libFuzzer targets of Fuzz/ (built by `make fuzz-build`).
#   Fuzz/run.sh SECONDS [TARGET...]   fuzz each target for SECONDS, seeded from the fixtures;
#                                     findings go to Fuzz/crashes/<target>/ (commit them once fixed)
#   Fuzz/run.sh --replay [TARGET...]  run every committed finding once (make test)
# Prints executions and coverage per target and writes them to .build-fuzz/report.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${FUZZ_BIN:-.build-fuzz/release/OnnxTrainFuzz}
ALL="model external checkpoint npy npz safetensors csv tensorproto"
[ -x "$BIN" ] || { echo "fuzz: $BIN is missing; run make fuzz-build" >&2; exit 1; }

seeds() {  # the fixture files that seed each target
    local F=Tests/Fixtures
    case $1 in
        model) ls $F/data/*.onnx $F/data/crafted/*.onnx $F/inference/{mlp,cnn}_opset1{4,7}/model.onnx $F/training/*/eval_model.onnx 2>/dev/null ;;
        external) ls Fuzz/seeds/external/* ;;
        checkpoint) ls $F/checkpoint/mlp/*.ckpt $F/training/checkpoint_roundtrip/* 2>/dev/null ;;
        npy) ls $F/data/*.npy ;;
        npz) ls $F/data/*.npz ;;
        safetensors) ls $F/data/*.safetensors ;;
        csv) ls Fuzz/seeds/csv/* ;;
        tensorproto) ls $F/data/pb/*.pb $F/data/*.pb ;;
    esac
}

# libFuzzer options: a hang is an input that takes over 10 s, an OOM one that needs over 2 GiB.
COMMON=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
# Leaks inside Foundation itself (not onnx-train's code) are listed in lsan.supp.
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/Fuzz/lsan.supp:print_suppressions=0}
# Swift's crash backtracer reads memory the address sanitizer guards; libFuzzer reports crashes itself.
export SWIFT_BACKTRACE=enable=no

status=0
if [ "${1:-}" = --replay ]; then
    shift
    for t in ${@:-$ALL}; do
        files=$(ls Fuzz/crashes/$t/* 2>/dev/null | grep -v README)
        [ -n "$files" ] || continue
        if ONNX_TRAIN_FUZZ_TARGET=$t "$BIN" "${COMMON[@]}" $files > .build-fuzz/replay-$t.log 2>&1; then
            echo "fuzz replay $t: $(echo $files | wc -w) committed findings pass"
        else
            echo "fuzz replay $t: FAILED (see .build-fuzz/replay-$t.log)"; tail -20 .build-fuzz/replay-$t.log; status=1
        fi
    done
    exit $status
fi

SECONDS_PER_TARGET=${1:?usage: Fuzz/run.sh SECONDS [TARGET...] | --replay [TARGET...]}
shift
mkdir -p .build-fuzz
report=.build-fuzz/report.txt
: > $report
for t in ${@:-$ALL}; do
    corpus=.build-fuzz/corpus/$t
    mkdir -p $corpus Fuzz/crashes/$t
    for s in $(seeds $t); do cp -n "$s" $corpus/seed-$(basename $(dirname $s))-$(basename $s) 2>/dev/null; done
    log=.build-fuzz/fuzz-$t.log
    ONNX_TRAIN_FUZZ_TARGET=$t nice -n 10 "$BIN" "${COMMON[@]}" -max_total_time=$SECONDS_PER_TARGET -print_final_stats=1 \
        -artifact_prefix=Fuzz/crashes/$t/ $corpus > $log 2>&1
    rc=$?
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' $log | awk '{print $2}')
    cov=$(grep -E '^#[0-9]+' $log | tail -1 | grep -o 'cov: [0-9]*' | awk '{print $2}')
    ft=$(grep -E '^#[0-9]+' $log | tail -1 | grep -o 'ft: [0-9]*' | awk '{print $2}')
    line="$t: ${SECONDS_PER_TARGET}s, ${runs:-?} executions, cov ${cov:-?} edges, ft ${ft:-?}, corpus $(ls $corpus | wc -l) files"
    if [ $rc -ne 0 ]; then line="$line, FINDING (exit $rc, see $log and Fuzz/crashes/$t/)"; status=1; tail -30 $log; fi
    echo "$line" | tee -a $report
done
exit $status
