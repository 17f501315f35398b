#!/usr/bin/env bash
# Installs every Debian package distil needs to build, test and run on Debian 12.
# Idempotent and non-interactive: packages already present are left alone.
#   scripts/setup.sh              build + test dependencies (what CI and the README's commands need)
#   scripts/setup.sh --container  also podman/buildah/runc/debootstrap for docker/smoke.sh
#   scripts/setup.sh --bench      also the peers the benchmarks compare against
set -euo pipefail

want_container=0
want_bench=0
for arg in "$@"; do
  case "$arg" in
    --container) want_container=1 ;;
    --bench) want_bench=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libboost-dev libseccomp-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libcli11-dev
  libpcre2-dev libginac-dev libcln-dev libyaml-cpp-dev zlib1g-dev
  libtorch-dev libopenblas0-pthread libgloo-dev
  python3 clang libclang-rt-14-dev
  protobuf-compiler python3-protobuf python3-crc32c
)
# protoc, python3-protobuf and python3-crc32c read the trainer's TensorBoard event files in its tests
# (tests/trainer/tfevents_peer.py). Node.js runs the reference tokenizer in the tokenizer conformance test; a machine may already
# have it from another source (nodesource), whose nodejs conflicts with Debian's npm.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
((want_container)) && packages+=(podman buildah runc debootstrap fuse-overlayfs slirp4netns uidmap)
((want_bench)) && packages+=(bubblewrap wrk hyperfine python3-torch)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "setup.sh: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi

echo "setup.sh: installing ${#missing[@]} package(s): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
if ! $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  for p in "${missing[@]}"; do
    apt-cache show "$p" >/dev/null 2>&1 || echo "setup.sh: package '$p' is not available from the configured Debian sources" >&2
  done
  echo "setup.sh: apt-get install failed" >&2
  exit 1
fi
echo "setup.sh: done"
