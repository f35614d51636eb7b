#!/usr/bin/env bash
# tools/soak.sh [SECONDS] - builds test_stress in Release (preset release) if needed, then runs
# random graphs back to back for SECONDS (default 600), printing VmRSS / VmHWM every 10 s. Fails
# if a graph fails its checks or if RSS, after the warm-up, grows more than 20 % + 8 MiB above
# the first sample after it. SLUICE_SOAK_BUILD=DIR uses an already configured build directory.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
case "$seconds" in
  '' | *[!0-9]* | 0) echo "usage: tools/soak.sh [SECONDS > 0]" >&2; exit 2 ;;
esac
build="${SLUICE_SOAK_BUILD:-build/release}"
if [ -z "${SLUICE_SOAK_BUILD:-}" ]; then
  tools/install_deps.sh
  cmake --preset release >/dev/null
fi
cmake --build "$build" --target test_stress
echo "=== soak: ${seconds} s of random graphs ($build/tests/test_stress)"
SLUICE_SOAK_SECONDS="$seconds" "$build/tests/test_stress" --test-case='soak*'
