# The trainer image: distil-train + distil-eval (+ distil-demo, the built-in demo's tasks and tiny model) on Debian's CPU LibTorch (libtorch-dev), no env server.
#
# Build (from the repository root; docker/trainer-smoke.sh does all of this with podman):
#   docker/make-base-image.sh            # no registry here: debootstrap bookworm -> localhost/distil-debian:bookworm
#   podman build --isolation chroot -f docker/trainer.Dockerfile -t distil-train:latest .
# Run (a config and the tasks mounted; metrics.jsonl, TensorBoard event files and checkpoints land in /runs):
#   podman run --rm -v $PWD/configs:/configs:ro -v $PWD/tasks:/tasks:ro -v $PWD/runs:/runs distil-train:latest \
#     train --config /configs/my.yaml --set train.output_dir=/runs/my-run
# A GPU image is built from a CUDA PyTorch environment instead: README.md "Running in containers".
ARG BASE_IMAGE=localhost/distil-debian:bookworm

# ---- build stage: compilers, -dev packages and LibTorch's headers, thrown away afterwards ----
FROM ${BASE_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      build-essential cmake ninja-build pkg-config ca-certificates \
      libboost-dev libseccomp-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev \
      libpcre2-dev libginac-dev libcln-dev libyaml-cpp-dev zlib1g-dev \
      libtorch-dev libopenblas0-pthread \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
# Only the two binaries (and what they link): no tests, no benchmarks, no env server. BUILD_JOBS
# bounds the compile jobs (each LibTorch translation unit takes ~1 GB and tens of seconds).
ARG BUILD_JOBS=""
RUN cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DDISTIL_BUILD_TRAINER=ON -DDISTIL_BUILD_TESTS=OFF -DDISTIL_BUILD_BENCHMARKS=OFF \
 && cmake --build /build --target distil-train distil-eval distil-demo -j"${BUILD_JOBS:-$(nproc)}" \
 && strip /build/trainer/distil-train /build/trainer/distil-eval /build/trainer/distil-demo
# The Debian packages that provide the binaries' shared libraries (LibTorch's runtime libtorch2.0,
# OpenBLAS, yaml-cpp, ...), for the runtime stage.
RUN for lib in $(ldd /build/trainer/distil-train /build/trainer/distil-eval /build/trainer/distil-demo | awk '$3 ~ /^\// {print $3}' | sort -u); do \
      dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "/usr$lib" 2>/dev/null || dpkg -S "$lib"; \
    done | cut -d: -f1 | sort -u > /build/runtime-packages.txt \
 && cat /build/runtime-packages.txt

# ---- runtime stage: the two binaries and their shared libraries ----
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
COPY --from=build /build/runtime-packages.txt /tmp/runtime-packages.txt
# libopenblas0-pthread: LibTorch's BLAS through Debian's alternatives; ldd shows only libblas.so.3.
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends libopenblas0-pthread $(cat /tmp/runtime-packages.txt) \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && useradd --system --uid 10001 --user-group --home-dir /runs --shell /usr/sbin/nologin distil \
 && mkdir -p /runs && chown 10001:10001 /runs
COPY --from=build /build/trainer/distil-train /usr/local/bin/distil-train
COPY --from=build /build/trainer/distil-eval /usr/local/bin/distil-eval
COPY --from=build /build/trainer/distil-demo /usr/local/bin/distil-demo
COPY configs /opt/distil/configs
USER 10001:10001
WORKDIR /runs
ENTRYPOINT ["/usr/local/bin/distil-train"]
CMD ["--help"]
