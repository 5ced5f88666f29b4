#!/usr/bin/env bash
# `make demo-bpnet`: BodyPoseNet end to end on a synthetic multi-person dataset, on a CPU, in minutes.
#
#   1. generate a synthetic COCO-keypoints train set and a val set (different seeds), up to 2 people
#      per image, in demo_data/bpnet_synth/ (the layout specs/bpnet/synth_spec.json names)
#   2. dataset_convert the train split into shards + loss masks (TAO's `bpnet dataset_convert`)
#   3. train specs/bpnet/demo_train.yaml (tiny backbone, 192x192) into results/demo_bpnet/
#   4. evaluate the final model on the val set (COCO OKS AP, bottom-up: no boxes given)
#
# Everything goes through the `pose` launcher, like a user's commands. The runner is `auto`
# (Docker when an engine answers and has the pose image, else a local subprocess); set
# POSE_DEMO_RUNNER=local or docker to choose. Re-running resumes training from results/demo_bpnet/.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNNER="${POSE_DEMO_RUNNER:-auto}"
DATA=demo_data/bpnet_synth
RESULTS=results/demo_bpnet
TRAIN_IMAGES="${POSE_DEMO_TRAIN_IMAGES:-600}"
VAL_IMAGES="${POSE_DEMO_VAL_IMAGES:-60}"
# The spec's 20 epochs fit a CPU in minutes but teach a from-scratch bottom-up model little (see
# below); on a GPU give it more, e.g. POSE_DEMO_EPOCHS=100 POSE_DEMO_TRAIN_IMAGES=4000.
EPOCHS=()
if [ -n "${POSE_DEMO_EPOCHS:-}" ]; then EPOCHS=(--set "num_epoch=$POSE_DEMO_EPOCHS"); fi
# One BLAS thread per process: the data worker has the other core (more threads only contend on
# a 2-core machine; set OMP_NUM_THREADS yourself on a bigger one).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start ))s"; }

# A set whose annotation file exists is complete (synth writes it last).
for split in train val; do
    if [ "$split" = train ]; then images=$TRAIN_IMAGES; seed=11; else images=$VAL_IMAGES; seed=12; fi
    if [ ! -f "$DATA/$split/annotations/person_keypoints.json" ]; then
        pose dataset synth -o "$DATA/$split" --images "$images" --seed "$seed" --max_people 2 --size 192x192 --runner "$RUNNER"
    fi
done
# Reruns are no-ops: dataset_convert keeps a finished output whose inputs did not change.
pose bpnet dataset_convert -m train -o "$DATA/shards/train" --dataset_spec specs/bpnet/synth_spec.json \
    --generate_masks --runner "$RUNNER"
echo "== data ready after $(elapsed)"

pose bpnet train -e specs/bpnet/demo_train.yaml -r "$RESULTS" --runner "$RUNNER" "${EPOCHS[@]}"
echo "== trained after $(elapsed)"

pose bpnet evaluate --inference_spec specs/bpnet/demo_infer.yaml --model_filename "$RESULTS/model_final.pth" \
    --dataset_spec specs/bpnet/synth_spec.json --results_dir "$RESULTS/eval" --runner "$RUNNER"

ap=$(python3 -c "import json, sys; print(f\"{json.load(open(sys.argv[1]))['AP']:.3f}\")" "$RESULTS/eval/metrics.json")
echo "== demo done in $(elapsed): val AP $ap (OKS, bottom-up on $VAL_IMAGES synthetic images)"
# What to expect: 20 CPU epochs find the people and most joints (AP50 ~0.43) but place them
# loosely (AP ~0.11-0.13; ~0.14 with upsample_maps: true); the same pipeline overfits coco-mini to AP ~0.9
# (tests/workloads/test_bpnet_train_overfit.py). Bottom-up models train for hours, on GPUs.
echo "   curves: $RESULTS/curves.png   tensorboard --logdir $RESULTS/tensorboard"
