"""`bpnet inference --inference_spec S --model_filename M --input_type dir|image|video --input P
--results_dir R [--dump_visualizations]`: the people in images or a video, as detections.json and,
when asked, drawn skeletons."""

from __future__ import annotations

import json
from pathlib import Path

from pose_workloads import media
from pose_workloads.bad_data import Skips
from pose_workloads.bpnet.pipeline import Prediction, describe, predict_people, prepare
from pose_workloads.errors import BadInput
from pose_workloads.files import write_atomic
from pose_workloads.progress import track
from pose_workloads.render import draw_skeletons
from pose_workloads.specs import PoseConfig

DETECTIONS_FILE = "detections.json"


ANNOTATED_DIR = "images_annotated"


def detection_record(frame: media.Frame, prediction: Prediction, pose_config: PoseConfig) -> dict:
    """One frame of detections.json: every person's found joints by name, [x, y, score] image px."""
    people = []
    for person, score in zip(prediction.keypoints, prediction.scores):
        joints = {name: [round(float(x), 2), round(float(y), 2), round(float(s), 4)]
                  for name, (x, y, s) in zip(pose_config.keypoints, person) if x or y or s}
        people.append({"score": round(float(score), 4), "num_joints": len(joints), "keypoints": joints})
    return {
        "file": frame.file,
        "frame": frame.index,
        "height": int(frame.image.shape[0]),
        "width": int(frame.image.shape[1]),
        "people": people,
        "timings_ms": {k: round(v, 2) for k, v in prediction.timings_ms.items()},
    }


def _image_files(source: Path, input_type: str) -> list[Path]:
    if input_type == "dir":
        if not source.is_dir():
            raise BadInput(f"{source}: --input is not a directory; pass a folder of images or --input_type image/video")
        return media.image_files(source)
    if not source.is_file():
        raise BadInput(f"{source}: --input is not a file; pass an image, or --input_type dir for a folder")
    return [source]


def main(args) -> int:
    """`bpnet inference --inference_spec S --model_filename M --input_type dir|image|video --input P
    --results_dir R [--dump_visualizations]`: R/detections.json (per frame: file, frame index, people
    with [x, y, score] per joint name and a score; metadata: model, input shape, scales, timings)
    and, with --dump_visualizations, R/images_annotated/<image> or R/images_annotated/<video>.mp4."""
    spec, model_path, opened, settings = prepare(args)
    pose_config = opened.predictor.info.pose_config
    source = Path(args.input)
    out_dir = Path(args.results_dir)
    annotated_dir = out_dir / ANNOTATED_DIR
    video = video_out = None
    skips = Skips()
    if args.input_type == "video":
        if not source.is_file():
            raise BadInput(f"{source}: --input is not a file; pass a video ({', '.join(media.VIDEO_SUFFIXES)})")
        video = media.open_video(source, "convert it to .mp4 (H.264) or pass its frames with --input_type dir")
        total, frames = video.frame_count or 1, media.video_frames(video, source.name)
        if args.dump_visualizations:
            video_out = media.VideoOut(annotated_dir / f"{source.stem}.mp4", video.fps)
    else:
        files = _image_files(source, args.input_type)
        fix = f"give image files ({', '.join(media.IMAGE_SUFFIXES)}) or --input_type video"
        total, frames = len(files), media.image_frames(files, fix, skips)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.dump_visualizations:
        annotated_dir.mkdir(exist_ok=True)
    print(f"inference with {describe(model_path, opened, settings)} on {source}", flush=True)

    records: list[dict] = []
    complete = False
    try:
        for frame in track(frames, total, "inference"):
            prediction = predict_people(opened.predictor, frame.image, settings, pose_config)
            records.append(detection_record(frame, prediction, pose_config))
            if args.dump_visualizations:
                drawn = draw_skeletons(frame.image, prediction.keypoints, pose_config, settings.heatmap_threshold)
                if video_out is not None:
                    video_out.write(drawn)
                else:
                    media.save_image(annotated_dir / frame.file, drawn)
        if not records:
            raise BadInput(f"{source}: no frame could be read; check the video file")
        complete = True
    finally:
        if video_out is not None:
            video_out.close(complete)
        if video is not None:
            video.capture.release()

    frames_done = len(records)
    mean_ms = {key: round(sum(r["timings_ms"][key] for r in records) / frames_done, 2)
               for key in records[0]["timings_ms"]}
    detections = {
        "metadata": {
            "model": str(model_path),
            "backend": opened.predictor.backend,
            "pose_config": pose_config.name,
            "keypoints": list(pose_config.keypoints),
            "skeleton": [list(pair) for pair in pose_config.skeleton],
            "input_type": args.input_type,
            "input": str(source),
            "input_shape": list(settings.input_shape),
            "keep_aspect_ratio_mode": settings.mode,
            "scales": list(settings.scales),
            "upsample_maps": settings.upsample,
            "output_upsampling_factor": list(settings.upsampling),
            "heatmap_threshold": settings.heatmap_threshold,
            "paf_threshold": settings.paf_threshold,
            "frames": frames_done,
            "people": sum(len(r["people"]) for r in records),
            "mean_timings_ms": mean_ms,
            "skipped": skips.as_dict(),
        },
        "frames": records,
    }
    write_atomic(out_dir / DETECTIONS_FILE, json.dumps(detections))
    people = detections["metadata"]["people"]
    print(f"{people} people in {frames_done} frames; per frame: network {mean_ms['network']:.1f} ms, "
          f"grouping {mean_ms['grouping']:.1f} ms")
    skips.report("images", total)
    if args.dump_visualizations:
        print(f"drew skeletons into {annotated_dir}")
    print(f"wrote {out_dir / DETECTIONS_FILE}")
    return 0
