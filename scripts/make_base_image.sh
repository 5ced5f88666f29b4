#!/usr/bin/env bash
# Make a local base image (Debian bookworm + python3 3.11, pip, venv, CA certificates) with
# debootstrap and `docker import`, for machines that cannot pull NVIDIA's images (CI, no GPU).
#
#   scripts/make_base_image.sh [TAG]      default TAG: pose-base:bookworm
#
# The root filesystem tarball is cached as $POSE_CACHE_DIR/<name>.tar.gz (default
# /tmp/pose-docker/cache) so that a second run only imports it. The Debian mirror is the one
# this machine's apt uses (or $POSE_DEBIAN_MIRROR). Needs root (debootstrap) and a running
# engine ($DOCKER_HOST).
set -euo pipefail

tag=${1:-pose-base:bookworm}
suite=bookworm
cache=${POSE_CACHE_DIR:-/tmp/pose-docker/cache}
tarball=$cache/${tag//[:\/]/-}.tar.gz
# python3-venv: the pose images install into a venv (Debian's pip refuses system installs,
# PEP 668). ca-certificates: the images add extra CAs with update-ca-certificates.
# libjpeg-turbo-progs: jpegtran, for `pose dataset index_jpegs`.
packages=python3,python3-pip,python3-venv,ca-certificates,libjpeg-turbo-progs

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag already exists"
    exit 0
fi

debian_mirror() {
    # deb822 sources (URIs: ...) first, then one-line sources (deb URL suite ...); skip security.
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
    [[ -n $uri ]] || uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | awk '{print $2}' | grep -v -e security -e '^\[' | grep debian | head -n1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

if [[ ! -f $tarball ]]; then
    command -v debootstrap >/dev/null || { echo "error: debootstrap not found; install it: apt-get install -y debootstrap" >&2; exit 2; }
    [[ $(id -u) == 0 ]] || { echo "error: debootstrap needs root; run: sudo $0 $tag" >&2; exit 2; }
    mirror=${POSE_DEBIAN_MIRROR:-$(debian_mirror)}
    rootfs=$(mktemp -d /tmp/pose-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs" "$tarball.tmp"' EXIT
    echo "debootstrap $suite from $mirror (packages: $packages)"
    start=$SECONDS
    debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
        || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
    rm -f "$rootfs.log"
    # What a Docker base image does not need: downloaded packages, apt lists, docs.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    # apt inside the image must use the same mirror debootstrap used.
    echo "deb $mirror $suite main" >"$rootfs/etc/apt/sources.list"
    mkdir -p "$cache"
    tar --numeric-owner -C "$rootfs" -czf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    echo "debootstrap + tarball: $((SECONDS - start)) s ($(du -h "$tarball" | cut -f1))"
fi

docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$tarball" "$tag" >/dev/null
echo "imported $tag from $tarball"
