#!/usr/bin/env bash
# tools/test.sh [PRESET...] - install what is missing, then configure, build and run the whole
# test suite under each preset (default: release asan tsan). The tsan preset first builds (once,
# cached in build/tbb-tsan) a oneTBB instrumented for ThreadSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(release asan tsan)
for preset in "${presets[@]}"; do
  if [ "$preset" = tsan ]; then
    tools/build_tsan_tbb.sh "$PWD/build/tbb-tsan" >/dev/null
  fi
  echo "=== preset $preset"
  cmake --workflow --preset "$preset"
done
