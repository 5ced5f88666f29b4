#!/usr/bin/env bash
# `make serve-demo`: the demo's Simple Pose model served by Triton with its pre/post-processing.
#
#   1. export results/demo/model_final.pth (`make demo` trains it first when it is missing) to
#      ONNX and a Triton repository whose network runs in the Python backend (onnxruntime, CPU)
#   2. start the tritonserver of the nvidia-pytriton wheel on it, send the demo's example images
#      with their person boxes over HTTP, print the people found, and stop the server
set -euo pipefail
cd "$(dirname "$0")/.."

RESULTS=results/demo
MODEL=$RESULTS/model_final.pth
SERVE=$RESULTS/serve
if [ ! -f "$MODEL" ] || [ ! -f "$RESULTS/examples/boxes.json" ]; then
    echo "== no demo model yet: running make demo first"
    bash scripts/demo.sh
fi
pose simple-pose export -m "$MODEL" -o "$SERVE/model.onnx" --triton_repository "$SERVE/triton" \
    --triton_backend python --max_batch_size 16 --runner local
shopt -s nullglob
images=("$RESULTS"/examples/*.png "$RESULTS"/examples/*.jpg)
python -m pose_workloads.serving.server "$SERVE/triton" "${images[@]}" --boxes "$RESULTS/examples/boxes.json"
