#!/usr/bin/env bash
# Builds distil against the CUDA LibTorch inside an installed PyTorch 2.x (the usual way to get a
# CUDA LibTorch on a GPU machine), with NCCL from the nvidia-nccl wheel when PyTorch brought one.
#   scripts/build-gpu.sh [BUILD_DIR] [extra cmake -D options...]     (default BUILD_DIR: build-gpu)
# PYTHON selects the interpreter that has torch (default: python3). The other dependencies are the
# same as for the CPU build (scripts/setup.sh installs them on Debian/Ubuntu).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
build_dir=${1:-build-gpu}
(($#)) && shift
if ! prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null); then
  echo "build-gpu.sh: '$python' cannot import torch; set PYTHON to the interpreter that has PyTorch" >&2
  exit 2
fi
"$python" -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda, "GPU visible:", torch.cuda.is_available())'
nccl_args=()
if nccl=$("$python" -c 'import nvidia.nccl; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null); then
  library=$(ls "$nccl"/lib/libnccl.so* 2>/dev/null | head -1 || true)
  [ -n "$library" ] && nccl_args=(-DNCCL_INCLUDE_DIR="$nccl/include" -DNCCL_LIBRARY="$library")
fi
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DDISTIL_BUILD_BENCHMARKS=ON "${nccl_args[@]}" "$@"
cmake --build "$build_dir"
echo "built into $build_dir; run the tests with: ctest --test-dir $build_dir -LE slow -j\$(nproc)"
