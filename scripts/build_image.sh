#!/usr/bin/env bash
# Build a pose image on the local base image (scripts/make_base_image.sh) with this machine's
# CPU torch wheel and extra CA certificates: what CI and `make images` do on a machine without
# NVIDIA's images.
#
#   scripts/build_image.sh [pytorch|tensorrt]     default: pytorch
#
# Inputs (environment):
#   POSE_BASE_IMAGE  base image             (default pose-base:bookworm)
#   POSE_WHEELHOUSE  a directory of wheels  (default: the torch wheel matching this venv's torch,
#                    found in pip's configured find-links)
#   POSE_CA_CERTS    a directory of *.crt   (default /usr/local/share/ca-certificates when it holds any)
# Runs `pose images build`; the python in $PATH must have the project installed.
set -euo pipefail

kind=${1:-pytorch}
base=${POSE_BASE_IMAGE:-pose-base:bookworm}
work=$(mktemp -d /tmp/pose-build-inputs.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The torch wheel this venv runs, from pip's find-links (the same wheel `make venv` installed),
# so that the image and the host test the same torch. Only that wheel: the whole directory may
# be large and is sent to the engine as build context.
torch_wheelhouse() {
    local version tag links dir
    version=$(python -c "from importlib.metadata import version; print(version('torch'))" 2>/dev/null) || return 0
    tag=$(python -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
    links=$({ python -m pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p"; echo "${PIP_FIND_LINKS:-}"; } | tr ' ' '\n')
    for dir in $links; do
        dir=${dir#file://}
        for wheel in "$dir"/torch-"$version"-"$tag"-*.whl; do
            [[ -f $wheel ]] || continue
            mkdir -p "$work/wheelhouse"
            ln "$wheel" "$work/wheelhouse/" 2>/dev/null || cp "$wheel" "$work/wheelhouse/"
            echo "$work/wheelhouse"
            return 0
        done
    done
}

wheelhouse=${POSE_WHEELHOUSE:-$(torch_wheelhouse)}
ca_certs=${POSE_CA_CERTS:-}
if [[ -z $ca_certs ]] && ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    ca_certs=/usr/local/share/ca-certificates
fi

args=("$kind" --base-image "$base")
# No TensorRT on the local Debian base (its wheels are gigabytes of CUDA libraries, and nothing
# here could run them): the tensorrt image builds without it and refuses engine work in one line.
[[ $kind == tensorrt ]] && args+=(--build-arg "TENSORRT_PACKAGE=${POSE_TENSORRT_PACKAGE:-}")
[[ -n $wheelhouse ]] && args+=(--wheelhouse "$wheelhouse")
[[ -n $ca_certs ]] && args+=(--ca-certs "$ca_certs")
echo "pose images build ${args[*]}"
pose images build "${args[@]}"
