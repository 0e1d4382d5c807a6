# onnx-train: `make run` trains the bundled example, `make test` runs every test.
# Both install the system packages they need (Debian/Ubuntu, apt-get) and fetch their test data.

SHELL := /bin/bash
APT_PACKAGES := libprotobuf-c-dev libopenblas-dev libdnnl-dev protobuf-c-compiler zlib1g-dev pkg-config unzip valgrind binutils bsdutils libopenmpi-dev openmpi-bin
ONNX_VERSION := 1.22.0
TESTDATA := .testdata/onnx-$(ONNX_VERSION)
NODE_SUITE := $(TESTDATA)/onnx/backend/test/data/node
MANIFEST := Tests/Conformance/manifest.txt
# On x86-64 the binaries built here (release, tests, benchmark) are compiled for x86-64-v3 (AVX2,
# FMA), as the benchmark figures are; the package itself carries no such flag (a versioned
# dependency may not), so OnnxTrain used as a library builds for the default target, and the command
# checks the CPU only when built with these flags. `make release SWIFT_CPU_FLAGS=` builds a portable binary.
ifeq ($(shell uname -m),x86_64)
SWIFT_CPU_FLAGS ?= -Xswiftc -target-cpu -Xswiftc haswell -Xswiftc -DONNX_TRAIN_X86_64_V3
endif
# One release build with testing enabled serves the tests and the conformance run: debug Swift
# is too slow for the heavier suites.
TEST_BUILD := swift build -c release -Xswiftc -enable-testing $(SWIFT_CPU_FLAGS) --scratch-path .build-test
RELEASE_BIN := .build/release/onnx-train
TEST_BIN := .build-test/release/onnx-train

.PHONY: all deps build release run bench bench-smoke bench-check bench-venv oracle oracle-venv test test-build mpi-test unit-test conformance conformance-manifest conformance-docs testdata proto-check fuzz fuzz-build fuzz-check versioned-dependency clean

all: build

## Install the system packages that are missing (apt-get update runs once, only if needed).
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

build: deps
	swift build

release: deps
	swift build -c release $(SWIFT_CPU_FLAGS) --product onnx-train

## Train the bundled example end to end: the digits MLP (Examples/digits), 10 epochs, eval after each.
run: release
	$(RELEASE_BIN) run Examples/digits --data Examples/digits/train.npz --eval-data Examples/digits/test.npz \
	    --batch-size 32 --epochs 10 --lr 0.002 --out runs/digits

## Benchmark against onnxruntime-training and PyTorch (issue 6); writes docs/PERFORMANCE.md.
## The venv (.venv-bench) comes from Benchmarks/requirements.txt with pip. torch==2.13.0+cpu is a
## PyTorch CPU wheel: where pip does not already find it (a local wheel folder), pass its index, e.g.
## make bench BENCH_PIP_ARGS="--extra-index-url <PyTorch's CPU wheel index>".
BENCH_VENV := .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_ARGS ?=
BENCH_PIP_ARGS ?=

## Made once, and brought up to date when Benchmarks/requirements.txt changes (the copy inside the venv is
## compared); BENCH_VENV=/path/to/venv uses an existing one as it is. The current onnxruntime of the
## inference rows lives in its own venv, .venv-bench-ort (Benchmarks/requirements-ort-current.txt):
## onnxruntime-training 1.19.2 cannot share one with it.
BENCH_ORT_VENV := .venv-bench-ort
bench-venv:
	@command -v python3 >/dev/null || { echo "make: python3 with venv and pip is needed for the benchmark" >&2; exit 1; }
	@if [ ! -x $(BENCH_PY) ] || { [ "$(BENCH_VENV)" = .venv-bench ] && ! cmp -s Benchmarks/requirements.txt $(BENCH_VENV)/requirements.txt; }; then \
	  echo "making $(BENCH_VENV) from Benchmarks/requirements.txt"; \
	  { [ -x $(BENCH_PY) ] || python3 -m venv $(BENCH_VENV); } && \
	  $(BENCH_PY) -m pip install --quiet $(BENCH_PIP_ARGS) -r Benchmarks/requirements.txt && \
	  cp Benchmarks/requirements.txt $(BENCH_VENV)/requirements.txt \
	  || { echo "make: installing Benchmarks/requirements.txt into $(BENCH_VENV) failed" >&2; exit 1; }; \
	fi
	@if [ ! -x $(BENCH_ORT_VENV)/bin/python ] || ! cmp -s Benchmarks/requirements-ort-current.txt $(BENCH_ORT_VENV)/requirements.txt; then \
	  echo "making $(BENCH_ORT_VENV) from Benchmarks/requirements-ort-current.txt"; \
	  { [ -x $(BENCH_ORT_VENV)/bin/python ] || python3 -m venv $(BENCH_ORT_VENV); } && \
	  $(BENCH_ORT_VENV)/bin/python -m pip install --quiet $(BENCH_PIP_ARGS) -r Benchmarks/requirements-ort-current.txt && \
	  cp Benchmarks/requirements-ort-current.txt $(BENCH_ORT_VENV)/requirements.txt \
	  || { echo "make: installing Benchmarks/requirements-ort-current.txt into $(BENCH_ORT_VENV) failed" >&2; exit 1; }; \
	fi

bench: release bench-venv
	$(BENCH_PY) Benchmarks/bench.py $(if $(BENCH_SMOKE),--smoke) --ort-current $(BENCH_ORT_VENV)/bin/python $(BENCH_ARGS)

## make bench in smoke mode on the test build (make test runs it: it checks the benchmark works, it
## measures nothing; about a minute with the venv).
bench-check: bench-venv
	$(BENCH_PY) Benchmarks/bench.py --smoke --binary $(TEST_BIN) --ort-current $(BENCH_ORT_VENV)/bin/python

## The benchmark with 3 steps per runtime: checks that it works (writes .build/bench-smoke.md).
bench-smoke:
	$(MAKE) bench BENCH_SMOKE=1

## PyTorch as the oracle (issue 10): models exported by both torch exporters (MLP, CNN, LSTM, GPT,
## torchvision ResNet-18 and MobileNetV3-Small, Hugging Face BERT and GPT-2) train from
## `onnx-train artifacts` with PyTorch's gradients and 20-step losses. Its venv (.venv-oracle) comes
## from Tests/Oracle/requirements.txt as the bench venv does; ORACLE_PIP_ARGS as BENCH_PIP_ARGS.
ORACLE_VENV := .venv-oracle
ORACLE_PY := $(ORACLE_VENV)/bin/python
ORACLE_PIP_ARGS ?=

oracle-venv:
	@if [ ! -x $(ORACLE_PY) ]; then \
	  command -v python3 >/dev/null || { echo "make: python3 with venv and pip is needed for the PyTorch oracle" >&2; exit 1; }; \
	  echo "creating $(ORACLE_VENV) from Tests/Oracle/requirements.txt"; \
	  python3 -m venv $(ORACLE_VENV) && \
	  $(ORACLE_PY) -m pip install --quiet $(ORACLE_PIP_ARGS) -r Tests/Oracle/requirements.txt \
	  || { rm -rf $(ORACLE_VENV); exit 1; }; \
	fi

oracle: oracle-venv
	$(ORACLE_PY) Tests/Oracle/pytorch_oracle.py --binary $(TEST_BIN)

## Download the onnx wheel with pip and unpack only its backend test data (never committed).
testdata: $(NODE_SUITE)/test_abs/model.onnx

$(NODE_SUITE)/test_abs/model.onnx:
	@command -v python3 >/dev/null || { echo "make: python3 with pip is needed to fetch the ONNX test data" >&2; exit 1; }
	rm -rf $(TESTDATA) && mkdir -p $(TESTDATA)
	python3 -m pip download --quiet --no-deps --only-binary=:all: onnx==$(ONNX_VERSION) -d $(TESTDATA)/wheel
	cd $(TESTDATA) && unzip -q -o wheel/onnx-$(ONNX_VERSION)-*.whl 'onnx/backend/test/data/node/*' && rm -rf wheel
	@test -f $@ || { echo "make: the onnx $(ONNX_VERSION) wheel has no node test data" >&2; exit 1; }
	@echo "ONNX node suite: $$(ls $(NODE_SUITE) | wc -l) cases in $(NODE_SUITE)"

proto-check: deps
	Proto/generate.sh --check

test-build: deps
	$(TEST_BUILD) --build-tests

## Every test: generated code up to date, the ONNX conformance suite against the manifest, unit
## tests and the rest; each part prints how long it took and the end gives the table.
TIMES := .build-test/make-test-times.txt
TIMED := Tests/timed.sh $(TIMES)

test: deps
	@mkdir -p .build-test && rm -f $(TIMES)
	@$(TIMED) test-data $(MAKE) --no-print-directory testdata proto-check
	@$(TIMED) build $(MAKE) --no-print-directory test-build
	@$(TIMED) conformance $(TEST_BIN) conformance $(NODE_SUITE) --manifest $(MANIFEST) --quiet
	@$(TIMED) leak-check env ONNX_TRAIN_BIN=$(TEST_BIN) Tests/leakcheck.sh
	@$(TIMED) bench-smoke $(MAKE) --no-print-directory bench-check
	@$(TIMED) mpi $(MAKE) --no-print-directory mpi-test
	@$(TIMED) fuzz $(MAKE) --no-print-directory fuzz-check
	@$(TIMED) versioned-dependency $(MAKE) --no-print-directory versioned-dependency
	@$(TIMED) pytorch-oracle $(MAKE) --no-print-directory oracle
	@$(TIMED) unit-tests bash -c 'set -o pipefail; swift test -c release -Xswiftc -enable-testing --scratch-path .build-test \
	  --skip-build 2>&1 | tee .build-test/swift-test.log'
	@Tests/summarize-xctest.sh .build-test/swift-test.log
	@echo "make test: every part passed; time per part:"; $(TIMED) --summary

## Data-parallel training over MPI (issue 12): mpirun -np 2 and -np 3 on this machine against one
## process with the global batch, BatchNorm's DDP behaviour, failing and killed processes, the
## TrainMPI example (Tests/mpi-test.py, the system python3; about half a minute).
mpi-test: deps test-build
	python3 Tests/mpi-test.py --binary $(TEST_BIN) --example .build-test/release/TrainMPI

## Coverage-guided fuzzing (libFuzzer + AddressSanitizer) of the model loader, external data, the
## checkpoint reader, the npy/npz/safetensors/CSV/TensorProto readers and session building (Fuzz/).
## `make fuzz` runs every target FUZZ_SECONDS (default: 30 minutes in all), or only FUZZ_TARGETS;
## findings land in Fuzz/crashes/<target>/, which make test replays once they are fixed.
FUZZ_SECONDS ?= 225
FUZZ_CHECK_SECONDS ?= 8
FUZZ_TARGETS ?=

fuzz-build: deps
	cd Fuzz && swift build -c release --sanitize=fuzzer --sanitize=address -Xswiftc -enable-testing --scratch-path ../.build-fuzz

fuzz: fuzz-build
	Fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

## What make test runs: every committed finding once, then each target for a few seconds.
fuzz-check: fuzz-build
	Fuzz/run.sh --replay
	Fuzz/run.sh $(FUZZ_CHECK_SECONDS)

## A package depending on OnnxTrain by version (a local tagged copy) must resolve and build:
## SwiftPM refuses a versioned dependency whose library targets carry unsafeFlags.
versioned-dependency: deps
	Tests/versioned-dependency.sh

conformance: deps testdata test-build
	$(TEST_BIN) conformance $(NODE_SUITE) --manifest $(MANIFEST)

## Rewrite the manifest from a fresh run (keeps written reasons), then the docs and README count.
conformance-manifest: deps testdata test-build
	$(TEST_BIN) conformance $(NODE_SUITE) --manifest $(MANIFEST) --update-manifest --quiet
	$(MAKE) conformance-docs

conformance-docs: deps testdata test-build
	mkdir -p docs
	$(TEST_BIN) conformance $(NODE_SUITE) --manifest $(MANIFEST) --quiet \
	  --markdown docs/CONFORMANCE.md --readme README.md --report .testdata/conformance-report.json

clean:
	rm -rf .build .build-test .build-fuzz
