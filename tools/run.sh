#!/usr/bin/env bash
# tools/run.sh [sluice-bench options] - the main job: install what is missing, build in Release,
# then run sluice-bench's short default sweep (every scenario, 2 M events, once) on built-in
# data. Options go to sluice-bench (for example: handoff chain4 --events 20000000). It installs
# Elixir too (install_deps.sh --genstage), so sluice-bench's genstage engine measures GenStage
# itself in the same run (from ../shared/genstage-bench; skipped with a note where that is absent).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh --genstage
cmake --preset release >/dev/null
cmake --build --preset release --target sluice_bench
if [ $# -eq 0 ]; then set -- --quick; fi
build/release/tools/sluice-bench "$@"
