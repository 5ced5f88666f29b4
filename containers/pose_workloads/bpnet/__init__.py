"""BodyPoseNet (bottom-up): every person of an image at once, heatmaps and PAFs at stride 8,
grouped into people (grouping.py).

    pipeline.py    input sizing, multi-scale maps, grouping, image px; the model file opened
                   as a predictor of one stage. Used by train's validation, evaluate, inference
                   and export.
    train.py       `bpnet train`
    evaluate.py    `bpnet evaluate`
    inference.py   `bpnet inference`
"""
