"""`pose <network> export`: a `.pth` model file -> ONNX (onnxruntime, any TensorRT) and, in the
TensorRT image on a GPU, a TensorRT engine (fp32, fp16 or int8 calibrated from an image folder).

    model.pth --export_onnx--> model.onnx (+ metadata_props['pose']) --build_engine--> model.engine (+ .json)

Only the prediction is exported: simple-pose's heatmaps, bpnet's last stage (heatmaps, pafs);
`runtime.load_predictor` opens all three files alike. The axes that vary at inference are
dynamic: the batch for simple-pose (crops are always the trained size), batch, height and width
for bpnet (multi-scale and keep_aspect_ratio_mode change the input size per image). TAO's
BodyPoseNet engines have a fixed height and width, which is why TAO turns multi-scale off for
them; ours take the range of sizes the inference spec asks for (`engine_profile`).

Exporter: torch 2.13 offers two. Both give a valid model with these dynamic axes that matches
PyTorch to 1e-12 on our networks; we use the TorchScript one (`dynamo=False`) because the
torch.export-based default takes 20-50 s for the tiny models where TorchScript takes under 3 s,
and it has no opset-17 implementations: it writes opset 18 and converts down through onnx's C API
with a silent fallback, so `--opset 17` (the highest TensorRT 8.6 parses) would not be
guaranteed. Its strength, data-dependent control flow, is something these convolution stacks do
not have. If a future torch drops the TorchScript exporter, switch `dynamo=True` and pass
`dynamic_shapes` instead of `dynamic_axes`.

    onnx.py       export_onnx, read_onnx_info (the ONNX file and its metadata)
    tensorrt.py   engine_profile, calibration data, build_engine (TensorRT image, GPU)
    action.py     main: the `export` command (flags, then the two steps)
"""
