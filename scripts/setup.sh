#!/usr/bin/env bash
# Installs every Debian package ft needs that is missing (idempotent), then builds (incrementally).
# scripts/quickstart.sh and scripts/test.sh call it first.
#   bash scripts/setup.sh            # Release build in ./build
#   FT_SANITIZE=1 bash scripts/setup.sh   # also an ASan+UBSan build in ./build-asan
#   FT_FUZZ=1 bash scripts/setup.sh       # also the libFuzzer targets (clang) in ./build-fuzz
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(build-essential cmake ninja-build pkg-config
      libeigen3-dev libtbb-dev libcli11-dev nlohmann-json3-dev libhdf5-dev
      libgtest-dev libgmock-dev libbenchmark-dev libpcre2-dev libyaml-cpp-dev
      libopenblas-dev libopenmpi-dev openmpi-bin
      python3 python3-numpy)
# Test-only: llama.cpp (node-llama-cpp) referees ft's GGUF files. A machine that already has Node.js and
# npm (Debian's, or NodeSource's nodejs which bundles npm and conflicts with Debian's npm) keeps them.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then PKGS+=(nodejs npm); fi
if [ "${FT_FUZZ:-0}" = 1 ]; then PKGS+=(clang libclang-rt-14-dev); fi  # clang + its libFuzzer runtime
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Test-only: llama.cpp's prebuilt CPU libraries through node-llama-cpp (pinned in tests/llama/package.json
# and package-lock.json), the referee of tests/test_gguf_llama.py. Its install script is not run: no
# download or build at test time.
if ! cmp -s tests/llama/package-lock.json tests/llama/node_modules/.ft-installed-lock.json 2>/dev/null; then
  (cd tests/llama && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error &&
   cp package-lock.json node_modules/.ft-installed-lock.json)
fi
JOBS=${JOBS:-$(nproc)}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$JOBS"
if [ "${FT_SANITIZE:-0}" = 1 ]; then
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFT_SANITIZE=ON -DFT_BUILD_BENCH=OFF
  cmake --build build-asan -j "$JOBS" --target ft_tests ft
fi
if [ "${FT_FUZZ:-0}" = 1 ]; then
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFT_FUZZ=ON -DFT_BUILD_BENCH=OFF
  cmake --build build-fuzz -j "$JOBS" --target fuzz
fi
