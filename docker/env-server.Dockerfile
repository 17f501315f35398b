# The feedback-environment server image: distil-env + python3 (for sandboxed code tasks), no LibTorch.
#
# Build (from the repository root; docker/smoke.sh does all of this with podman):
#   docker/make-base-image.sh            # no registry here: debootstrap bookworm -> localhost/distil-debian:bookworm
#   podman build --isolation chroot -f docker/env-server.Dockerfile -t distil-env:latest .
# Run (the sandbox needs user namespaces and its own /proc inside the container; see docs/env_server.md):
#   podman run --rm -p 8080:8080 --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
#     --security-opt unmask=/proc/* -v $PWD/tasks:/tasks:ro distil-env:latest --tasks /tasks/my.jsonl
ARG BASE_IMAGE=localhost/distil-debian:bookworm

# ---- build stage: compilers and -dev packages, thrown away afterwards ----
FROM ${BASE_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends \
      build-essential cmake ninja-build pkg-config ca-certificates \
      libboost-dev libseccomp-dev nlohmann-json3-dev libcli11-dev \
      libpcre2-dev libginac-dev libcln-dev libyaml-cpp-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
RUN cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DDISTIL_BUILD_TRAINER=OFF -DDISTIL_BUILD_TESTS=OFF -DDISTIL_BUILD_BENCHMARKS=OFF \
 && cmake --build /build --target distil-env -j"$(nproc)" \
 && strip /build/env_server/distil-env
# The Debian packages that provide the binary's shared libraries, for the runtime stage.
RUN for lib in $(ldd /build/env_server/distil-env | awk '$3 ~ /^\// {print $3}'); do \
      dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "/usr$lib" 2>/dev/null || dpkg -S "$lib"; \
    done | cut -d: -f1 | sort -u > /build/runtime-packages.txt \
 && cat /build/runtime-packages.txt

# ---- runtime stage: the server, its shared libraries, python3 ----
FROM ${BASE_IMAGE}
# C++ code tasks need a compiler in the image: --build-arg RUNTIME_EXTRA_PACKAGES=g++
ARG RUNTIME_EXTRA_PACKAGES=""
ENV DEBIAN_FRONTEND=noninteractive
COPY --from=build /build/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update -q \
 && apt-get install -y -q --no-install-recommends python3-minimal ${RUNTIME_EXTRA_PACKAGES} $(cat /tmp/runtime-packages.txt) \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin distil
COPY --from=build /build/env_server/distil-env /usr/local/bin/distil-env
COPY tests/env_server/data/tasks.jsonl /opt/distil/tasks/example.jsonl
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/distil-env", "serve", "--host", "0.0.0.0", "--port", "8080"]
CMD ["--tasks", "/opt/distil/tasks/example.jsonl"]
