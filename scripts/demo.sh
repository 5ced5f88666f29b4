#!/usr/bin/env bash
# `make demo`: Simple Pose end to end on a synthetic dataset, on a CPU, in minutes.
#
#   1. generate a synthetic COCO-keypoints train set and a val set (different seeds) in demo_data/:
#      `--easy` single-person scenes (upright, large people, no crowds or occluders)
#   2. train specs/simple_pose/demo.yaml (simple_pose_tiny, 160x128) into results/demo/
#   3. evaluate the final model on the val set (COCO OKS AP) and draw skeletons on a few val images
#
# Everything goes through the `pose` launcher, like a user's commands. The runner is `auto`
# (Docker when an engine answers and has the pose image, else a local subprocess); set
# POSE_DEMO_RUNNER=local or docker to choose. Re-running resumes training from results/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNNER="${POSE_DEMO_RUNNER:-auto}"
DATA=demo_data
RESULTS=results/demo
SPEC=specs/simple_pose/demo.yaml
TRAIN_IMAGES="${POSE_DEMO_TRAIN_IMAGES:-1600}"
VAL_IMAGES="${POSE_DEMO_VAL_IMAGES:-200}"
# One BLAS thread per process: the data worker has the other core (more threads only contend on
# a 2-core machine; set OMP_NUM_THREADS yourself on a bigger one).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start ))s"; }

# A set whose annotation file exists is complete (synth writes it last); one of another size (an
# older demo, POSE_DEMO_*_IMAGES) is written again.
set_size() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['info']['images'])" "$1" 2>/dev/null || echo 0; }
for split in train val; do
    if [ "$split" = train ]; then images=$TRAIN_IMAGES; seed=1; else images=$VAL_IMAGES; seed=2; fi
    if [ "$(set_size "$DATA/$split/annotations/person_keypoints.json")" != "$images" ]; then
        pose dataset synth -o "$DATA/$split" --images "$images" --seed "$seed" --max_people 1 --easy --size 256x256 --runner "$RUNNER"
    fi
done
echo "== data ready after $(elapsed)"

pose simple-pose train -e "$SPEC" -r "$RESULTS" --runner "$RUNNER"
echo "== trained after $(elapsed)"

pose simple-pose evaluate -e "$SPEC" -m "$RESULTS/model_final.pth" -r "$RESULTS/eval" --runner "$RUNNER"

# Skeletons on the first four val images, in their labelled people's boxes.
mkdir -p "$RESULTS/examples"
python3 - "$DATA/val" "$RESULTS/examples" <<'PY'
import json, shutil, sys
from pathlib import Path
val, out = Path(sys.argv[1]), Path(sys.argv[2])
coco = json.loads((val / "annotations/person_keypoints.json").read_text())
images = {i["id"]: i["file_name"] for i in coco["images"][:4]}
for name in images.values():
    shutil.copy(val / "images" / name, out / name)
boxes = [{"file_name": images[a["image_id"]], "bbox": a["bbox"], "score": 1.0}
         for a in coco["annotations"] if a["image_id"] in images and a.get("num_keypoints", 0) > 0]
(out / "boxes.json").write_text(json.dumps(boxes))
PY
pose simple-pose inference -m "$RESULTS/model_final.pth" --input "$RESULTS/examples" --boxes "$RESULTS/examples/boxes.json" \
    -r "$RESULTS/inference" --runner "$RUNNER"

ap=$(python3 -c "import json, sys; print(f\"{json.load(open(sys.argv[1]))['AP']:.3f}\")" "$RESULTS/eval/metrics.json")
echo "== demo done in $(elapsed): val AP $ap (OKS, ground-truth boxes)"
echo "   curves: $RESULTS/curves.png   skeletons: $RESULTS/inference/images/   tensorboard --logdir $RESULTS/tensorboard"
