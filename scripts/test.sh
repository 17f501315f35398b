#!/usr/bin/env bash
# The test command: install dependencies, configure, build, run CTest.
#   scripts/test.sh                 everything but tests labelled 'slow'
#   scripts/test.sh --all           include the slow ones
#   scripts/test.sh -L unit         any further arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${DISTIL_BUILD_DIR:-build}
jobs=${DISTIL_JOBS:-$(nproc)}

scripts/setup.sh
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo ${DISTIL_CMAKE_ARGS:-}
cmake --build "$build_dir" -j "$jobs"

ctest_args=(--output-on-failure -j "$jobs")
if [ "${1:-}" = "--all" ]; then
  shift
else
  ctest_args+=(-LE slow)
fi
# CTest runs test programs in parallel; LibTorch and OpenBLAS each spawning a thread per core
# on top of that oversubscribes the machine (spin-waiting threads made steps >10x slower here).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
cd "$build_dir"
exec ctest "${ctest_args[@]}" "$@"
