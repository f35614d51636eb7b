#!/usr/bin/env bash
# tools/test.sh [PRESET...] - install what is missing, then configure, build and run the whole
# test suite under each preset (default: release asan tsan, then fuzz: the libFuzzer target, built
# with clang, run briefly). The tsan preset first builds (once, cached in build/tbb-tsan) a oneTBB
# instrumented for ThreadSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(release asan tsan fuzz)
for preset in "${presets[@]}"; do
  if [ "$preset" = fuzz ]; then
    # The libFuzzer target (clang): a bounded run from the committed seeds (tools/fuzz.sh runs it
    # for longer).
    echo "=== fuzz"
    if [ ! -f build/fuzz/build.ninja ]; then
      CXX=clang++-14 cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DSLUICE_BUILD_FUZZ=ON -DSLUICE_BUILD_BENCH=OFF -DSLUICE_BUILD_TOOLS=OFF
    fi
    cmake --build build/fuzz --target fuzz_compile
    ctest --test-dir build/fuzz -L fuzz --output-on-failure
    continue
  fi
  if [ "$preset" = tsan ]; then
    tools/build_tsan_tbb.sh "$PWD/build/tbb-tsan" >/dev/null
  fi
  echo "=== preset $preset"
  cmake --workflow --preset "$preset"
done
