#!/usr/bin/env bash
# tools/build_tsan_tbb.sh [PREFIX] - build oneTBB from Debian's own source package with
# -fsanitize=thread, so ThreadSanitizer sees oneTBB's synchronisation (Debian's libtbb12 is not
# instrumented and gives false reports on correct programs). Cached: does nothing if PREFIX
# already holds it. PREFIX defaults to build/tbb-tsan in this checkout, where the tsan preset looks.
# Uses private apt dirs: no change to the system's apt configuration.
set -euo pipefail
prefix=${1:-${SLUICE_TSAN_TBB_PREFIX:-$(cd "$(dirname "$0")/.." && pwd)/build/tbb-tsan}}
if [ -f "$prefix/lib/cmake/TBB/TBBConfig.cmake" ] || [ -f "$prefix/lib64/cmake/TBB/TBBConfig.cmake" ]; then
  echo "$prefix"
  exit 0
fi
command -v dpkg-source >/dev/null || { apt-get update >&2 && apt-get install -y dpkg-dev >&2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial"
uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
if [ -z "$uri" ]; then
  uri=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)
fi
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
echo "deb-src $uri $codename main" >"$work/sources.list"
o=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
   -o "Dir::State::Lists=$work/lists")
apt-get "${o[@]}" update >&2
(cd "$work" && apt-get "${o[@]}" source --download-only "onetbb=$(dpkg-query -W -f='${source:Version}' libtbb-dev)" >&2 \
  && tar xf onetbb_*.orig.tar.* >&2)
src=$(find "$work" -maxdepth 1 -type d -name 'oneTBB-*' | head -1)
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTBB_TEST=OFF \
  -DTBB_STRICT=OFF -DTBB_SANITIZE=thread -DTBBMALLOC_BUILD=OFF -DTBB_EXAMPLES=OFF \
  -DCMAKE_INSTALL_PREFIX="$prefix" >&2
cmake --build "$work/build" -j"$(nproc)" >&2
cmake --install "$work/build" >&2
echo "$prefix"
