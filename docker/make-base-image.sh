#!/usr/bin/env bash
# Builds the Dockerfiles' base image locally, because no registry is reachable here:
# debootstrap a minimal Debian bookworm into a folder and `podman import` it as
# localhost/distil-debian:bookworm. Skips the work when the image already exists.
#   docker/make-base-image.sh [--force]
set -euo pipefail
image="localhost/distil-debian:bookworm"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
force=0
[[ "${1:-}" == "--force" ]] && force=1

if ((!force)) && podman image exists "$image"; then
  echo "make-base-image: $image already exists"
  exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "make-base-image: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "make-base-image: install debootstrap (scripts/setup.sh --container)" >&2; exit 1; }

rootfs="$(mktemp -d /var/tmp/distil-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
echo "make-base-image: debootstrap bookworm from $mirror into $rootfs"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -20 "$rootfs.log" >&2; echo "make-base-image: debootstrap failed (log: $rootfs.log)" >&2; exit 1; }
rm -f "$rootfs.log"
# apt inside the image should use the same mirror the host could reach.
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" >"$rootfs/etc/apt/sources.list"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$image"
echo "make-base-image: imported $image"
