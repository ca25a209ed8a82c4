# weft: a thin wrapper over CMake. `make demo` and `make test` do all set-up
# on a fresh Debian or Ubuntu machine: missing system packages are installed
# with apt-get (as root, or through sudo), or the exact command is printed.

BUILD      ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_ARGS ?=
PACKAGES   := build-essential cmake pkg-config libhwloc-dev libcmocka-dev libuv1-dev \
              valgrind gnuplot-nox

.PHONY: all deps configure build demo test bench bench-report clean \
        asan tsan test-asan test-tsan test-valgrind format

all: build

deps:
	@missing=""; \
	for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" \
	    || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; \
	  then SUDO="sudo"; \
	  else \
	    echo "weft needs:$$missing"; \
	    echo "run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	  echo "installing:$$missing"; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

configure: deps $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	$(BUILD)/examples/showcase

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# `bench` also keeps its results as $(BUILD)/bench.csv (name,impl,value,unit).
bench: build
	@{ for b in $(BUILD)/bench/bench_*; do [ -x "$$b" ] && "$$b"; done; \
	  bash bench/bench_io.sh $(BUILD); } | tee $(BUILD)/bench.out
	@bash bench/report.sh --csv <$(BUILD)/bench.out >$(BUILD)/bench.csv
	@echo "bench: results in $(BUILD)/bench.csv"

# Runs the suite and ../shared/peers interleaved (ROUNDS=3) and writes
# docs/performance.md, docs/performance.csv and docs/perf_*.svg.
bench-report: build
	bash bench/report.sh $(BUILD)

# Sanitizer builds: their own build trees, the same tests.
build-asan/CMakeCache.txt: | deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug \
	  -DWEFT_SANITIZE=address,undefined -DWEFT_BUILD_BENCH=OFF
build-tsan/CMakeCache.txt: | deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DWEFT_SANITIZE=thread -DWEFT_BUILD_BENCH=OFF

asan: deps build-asan/CMakeCache.txt
	cmake --build build-asan -j $(JOBS)
tsan: deps build-tsan/CMakeCache.txt
	cmake --build build-tsan -j $(JOBS)

test-asan: asan
	cd build-asan && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)
test-tsan: tsan
	cd build-tsan && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 \
	  suppressions=$(CURDIR)/tests/tsan.supp" \
	  ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)
# Valgrind runs the regular build's tests (not the examples or the install
# check) under memcheck with smaller stress sizes.
VALGRIND := valgrind;--error-exitcode=99;--fair-sched=yes;--quiet;--child-silent-after-fork=yes
VALGRIND := $(VALGRIND);--leak-check=full;--errors-for-leak-kinds=definite
VALGRIND := $(VALGRIND);--suppressions=$(CURDIR)/tests/valgrind.supp
build-valgrind/CMakeCache.txt: | deps
	cmake -S . -B build-valgrind -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DWEFT_BUILD_BENCH=OFF -DWEFT_BUILD_EXAMPLES=OFF \
	  "-DWEFT_TEST_LAUNCHER=$(VALGRIND)"
test-valgrind: deps build-valgrind/CMakeCache.txt
	cmake --build build-valgrind -j $(JOBS)
	cd build-valgrind && WEFT_VALGRIND=1 ctest --output-on-failure \
	  -j $(JOBS) -E install_package $(CTEST_ARGS)

format:
	clang-format -i include/*.h include/weft/*.h src/*.c src/*.h \
	  src/arch/*.h tests/*.c bench/*.c examples/*.c

clean:
	rm -rf $(BUILD) build-asan build-tsan build-valgrind
