#!/usr/bin/env bash
# tools/run.sh [events] [max_demand] - the main job: install what is missing, build in Release,
# run producer -> map -> filter -> sum on built-in data and print events/s.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target sluice_pipeline
build/release/tools/sluice_pipeline "$@"
