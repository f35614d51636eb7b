#!/usr/bin/env bash
# tools/install_deps.sh [--genstage] - install what the build needs from Debian 12's packages, only
# if missing. --genstage adds Elixir (elixir, erlang-dev), for sluice-bench's genstage engine:
# GenStage itself, measured in the same run (tools/run.sh asks for it; the test suite and CI do
# not).
set -euo pipefail
pkgs=(cmake ninja-build g++ libtbb-dev libconcurrentqueue-dev doctest-dev libbenchmark-dev
      clang-14 libclang-rt-14-dev)  # clang: tools/fuzz.sh (libFuzzer)
for arg in "$@"; do
  case "$arg" in
    --genstage) pkgs+=(elixir erlang-dev) ;;
    *) echo "usage: tools/install_deps.sh [--genstage]" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi
