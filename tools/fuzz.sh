#!/usr/bin/env bash
# tools/fuzz.sh [SECONDS] - builds the libFuzzer target fuzz_compile with clang 14 in build/fuzz
# and runs it for SECONDS (default 60) from the committed seeds (tests/fuzz/corpus). New inputs
# go to build/fuzz/corpus, crashing inputs to build/fuzz/artifacts/. Extra arguments after
# SECONDS are passed to libFuzzer (e.g. -jobs=2, or a crash file to replay it).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
cxx="${CXX_FUZZ:-clang++-14}"
command -v "$cxx" >/dev/null || { echo "fuzz.sh: $cxx not found (tools/install_deps.sh installs clang-14)" >&2; exit 1; }
if [ ! -f build/fuzz/build.ninja ]; then
  CXX="$cxx" cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSLUICE_BUILD_FUZZ=ON -DSLUICE_BUILD_BENCH=OFF -DSLUICE_BUILD_TOOLS=OFF -DSLUICE_WERROR=OFF
fi
cmake --build build/fuzz --target fuzz_compile -j2
mkdir -p build/fuzz/corpus build/fuzz/artifacts
exec build/fuzz/tests/fuzz/fuzz_compile -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 \
  -print_final_stats=1 -artifact_prefix=build/fuzz/artifacts/ "$@" build/fuzz/corpus tests/fuzz/corpus
