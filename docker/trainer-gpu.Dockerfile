# A GPU trainer image, built FROM a CUDA PyTorch image you already have (your own, or one you pulled
# from a registry you can reach): distil-train and distil-eval are compiled against the CUDA
# LibTorch inside that PyTorch (torch.utils.cmake_prefix_path) and NCCL from its nvidia-nccl wheel,
# exactly as scripts/build-gpu.sh does on a GPU machine. Single stage: at run time the binaries
# load libtorch_cuda.so from the PyTorch package, so the environment stays in the image.
#
#   podman build -f docker/trainer-gpu.Dockerfile --build-arg PYTORCH_IMAGE=my-registry/pytorch:2.11-cuda13 \
#     -t distil-train:gpu .
#   podman run --rm --device nvidia.com/gpu=all -v $PWD/runs:/runs distil-train:gpu train --config ...
#   (docker: --gpus all)
#
# Assumes a Debian/Ubuntu userland with apt and a python that imports torch (PYTHON). Not built on
# the project's machines: no CUDA PyTorch image is reachable there (README.md "Running in containers").
ARG PYTORCH_IMAGE
FROM ${PYTORCH_IMAGE}
ARG PYTHON=python3
ARG BUILD_JOBS=""
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      build-essential cmake ninja-build pkg-config ca-certificates git \
      libboost-dev libseccomp-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev \
      libpcre2-dev libginac-dev libcln-dev libyaml-cpp-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
# CMake >= 3.25 (Ubuntu 22.04 ships 3.22): from PyPI into the same environment when apt's is older.
RUN printf 'cmake_minimum_required(VERSION 3.25)\n' > /tmp/version.cmake \
 && if ! cmake -P /tmp/version.cmake 2>/dev/null; then "${PYTHON}" -m pip install --no-cache-dir 'cmake>=3.25'; fi \
 && rm /tmp/version.cmake
COPY . /src
# build-gpu.sh: the CUDA LibTorch and NCCL of the PyTorch in PYTHON; no tests, no benchmarks.
RUN cd /src && PYTHON="${PYTHON}" CMAKE_BUILD_PARALLEL_LEVEL="${BUILD_JOBS}" scripts/build-gpu.sh /build \
      -DDISTIL_BUILD_TESTS=OFF -DDISTIL_BUILD_BENCHMARKS=OFF \
 && install -m 0755 /build/trainer/distil-train /build/trainer/distil-eval /usr/local/bin/ \
 && cp -r /src/configs /opt/distil-configs && rm -rf /build /src
WORKDIR /runs
ENTRYPOINT ["/usr/local/bin/distil-train"]
CMD ["--help"]
