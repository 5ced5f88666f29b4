"""Simple Pose (top-down): one person box at a time, heatmaps at stride 4.

    pipeline.py    crops, heatmaps (flip test), joints in image px, COCO evaluation; the model
                   file opened as a predictor. Used by train's validation, evaluate, inference
                   and export.
    train.py       `simple-pose train`
    evaluate.py    `simple-pose evaluate`
    inference.py   `simple-pose inference`
"""
