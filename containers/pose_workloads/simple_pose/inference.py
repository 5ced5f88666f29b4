"""`simple-pose inference -m MODEL --input IMAGE|DIR|VIDEO -r RESULTS [--boxes JSON] [-e SPEC]`:
drawn skeletons and COCO results for images or a video, in given person boxes (or the whole
image as one box)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pose_workloads import media
from pose_workloads.bad_data import Skips
from pose_workloads.detections import read_boxes
from pose_workloads.errors import BadInput
from pose_workloads.files import write_atomic
from pose_workloads.render import draw_skeletons
from pose_workloads.simple_pose.pipeline import EvalSettings, HeatmapFn, eval_settings, open_model, predict_people
from pose_workloads.specs import PoseConfig, SimplePoseSpec, load_spec


def _boxes_for(boxes: dict, name: str, index: int | None, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The boxes given for one image or frame; none given at all -> the whole image as one box."""
    if not boxes:
        return np.array([[0, 0, width, height]], np.float32), np.ones(1, np.float32)
    key_id = index
    if key_id is None and Path(name).stem.isdigit():
        key_id = int(Path(name).stem)
    found = boxes.get(name) or boxes.get(key_id) or []
    return (np.array([b for b, _ in found], np.float32).reshape(-1, 4), np.array([s for _, s in found], np.float32))


def _results_for(people: np.ndarray, boxes: np.ndarray, box_scores: np.ndarray, threshold: float, **ids) -> list[dict]:
    out = []
    for person, box, box_score in zip(people, boxes, box_scores):
        confident = person[:, 2] > threshold
        score = float(box_score * (person[confident, 2].mean() if confident.any() else 0.0))
        out.append({**ids, "category_id": 1, "keypoints": person.reshape(-1).round(3).tolist(),
                    "score": round(score, 5), "bbox": [round(float(v), 2) for v in box]})
    return out


def main(args) -> int:
    """`simple-pose inference -m MODEL --input IMAGE|DIR|VIDEO -r RESULTS [--boxes JSON] [-e SPEC]`.

    Writes RESULTS/images/<name>.png (or RESULTS/<video>_pose.mp4) with the skeletons drawn and
    RESULTS/keypoints_results.json (COCO results, plus file_name / frame and bbox).
    """
    predictor = open_model(args.model)
    pose_config = predictor.info.pose_config
    input_size = tuple(predictor.info.input_size)
    settings = EvalSettings(batch_size=8)
    if args.spec:
        spec = load_spec(SimplePoseSpec, args.spec, args.overrides)
        settings = eval_settings(spec)
    heatmap_fn = lambda x: predictor(x)[0]  # noqa: E731
    source = Path(args.input)
    if not source.exists():
        raise BadInput(f"{source}: --input not found; give an image, a directory of images or a video")
    boxes = read_boxes(args.boxes)
    out_dir = Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []

    if media.is_video(source):
        results = _video_inference(source, out_dir, heatmap_fn, boxes, pose_config, input_size, settings)
    else:
        (out_dir / "images").mkdir(exist_ok=True)
        paths = media.image_files(source) if source.is_dir() else [source]
        fix = f"give an image file (or a video: {', '.join(media.VIDEO_SUFFIXES)})"
        drawn_names = media.output_names(paths, ".png")
        skips = Skips()
        for frame in media.image_frames(paths, fix, skips):
            image, path = frame.image, paths[frame.index]
            box_xywh, box_scores = _boxes_for(boxes, frame.file, None, image.shape[1], image.shape[0])
            people = predict_people(heatmap_fn, image, box_xywh, pose_config, input_size, settings)
            media.save_image(out_dir / "images" / drawn_names[path],
                             draw_skeletons(image, people, pose_config, settings.joint_score_threshold))
            ids: dict[str, Any] = {"file_name": frame.file}
            if path.stem.isdigit():
                ids["image_id"] = int(path.stem)
            results += _results_for(people, box_xywh, box_scores, settings.joint_score_threshold, **ids)
        print(f"drew {len(results)} people on {len(paths) - skips.total} images in {out_dir / 'images'}")
        skips.report("images", len(paths))
        summary = {"images": len(paths), "people": len(results), "skipped": skips.as_dict()}
        write_atomic(out_dir / "inference_summary.json", json.dumps(summary))

    write_atomic(out_dir / "keypoints_results.json", json.dumps(results))
    print(f"wrote {out_dir / 'keypoints_results.json'}")
    return 0


def _video_inference(source: Path, out_dir: Path, heatmap_fn: HeatmapFn, boxes: dict, pose_config: PoseConfig,
                     input_size: tuple[int, int], settings: EvalSettings) -> list[dict]:
    video = media.open_video(source, "convert it to .mp4 (H.264) or pass its frames as a directory")
    out_path = out_dir / f"{source.stem}_pose.mp4"
    video_out = media.VideoOut(out_path, video.fps)
    results: list[dict] = []
    frames = 0
    complete = False
    try:
        for frame in media.video_frames(video, source.name):
            height, width = frame.image.shape[:2]
            box_xywh, box_scores = _boxes_for(boxes, "", frame.index, width, height)
            people = predict_people(heatmap_fn, frame.image, box_xywh, pose_config, input_size, settings)
            video_out.write(draw_skeletons(frame.image, people, pose_config, settings.joint_score_threshold))
            results += _results_for(people, box_xywh, box_scores, settings.joint_score_threshold,
                                    file_name=source.name, frame=frame.index)
            frames += 1
        if frames == 0:
            raise BadInput(f"{source}: no frame could be read; check the video file")
        complete = True
    finally:
        video_out.close(complete)
        video.capture.release()
    print(f"drew {len(results)} people on {frames} frames into {out_path}")
    return results
