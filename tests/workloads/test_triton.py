"""`export --triton_repository`: the repository's configs parse with Triton's own ModelConfig, and
the real `tritonserver` (nvidia-pytriton's binary, Python backend, CPU) serves coco-mini with the
keypoints `pose inference` finds on the same model.

The server tests skip only when the binary is absent; CI sets POSE_REQUIRE_TRITON=1, which makes
its absence a failure."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pose_workloads.__main__ import main as workload
from pose_workloads.serving.repository import read_config
from pose_workloads.serving.server import find_tritonserver, infer, running_server

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Low thresholds, so that the random tiny bpnet finds people to compare.
BPNET_SPEC = {"input_shape": [96, 96], "heatmap_threshold": 0.1, "paf_threshold": 0.0, "min_parts": 2,
              "min_person_score": 0.0}
MAX_BATCH = 96  # coco-mini has up to 37 detections per image: 74 crops with the flip test
# The tiny bpnet with COCO-17's channels: 17 joints + background, 19 limbs.
BPNET_CONFIG = {"backbone_attributes": {"architecture": "tiny"}, "stages": 2, "heat_channels": 18, "paf_channels": 38}


def export(write_model, tmp: Path, network: str, backend: str = "python") -> tuple[Path, Path, list[str]]:
    """A tiny model exported with a Triton repository: (onnx, repository, inference flags)."""
    if network == "simple-pose":
        model = write_model(tmp / "model.pth", "simple-pose", (64, 48))
        flags: list[str] = []
    else:
        model = write_model(tmp / "model.pth", "bpnet", (64, 64), BPNET_CONFIG)
        spec = tmp / "infer_spec.json"
        spec.write_text(json.dumps(BPNET_SPEC))
        flags = ["--inference_spec", str(spec)]
    onnx, repository = tmp / "model.onnx", tmp / "repository"
    code = workload([network, "export", "-m", str(model), "-o", str(onnx), "--triton_repository", str(repository),
                     "--triton_backend", backend, "--max_batch_size", str(MAX_BATCH), *flags])
    assert code == 0
    return onnx, repository, flags


# --- the repository, without a server --------------------------------------------------------------

@pytest.mark.parametrize("network", ["simple-pose", "bpnet"])
@pytest.mark.parametrize("backend", ["onnxruntime", "python", "tensorrt"])
def test_every_config_parses_with_tritons_model_config(write_model, tmp_path, network, backend):
    if backend == "tensorrt":
        # No TensorRT here: the engine is copied as given, so any bytes stand in for it.
        from pose_workloads.serving.repository import write_repository
        from pose_workloads.serving.triton_models import load_pipeline

        onnx, onnx_repository, _ = export(write_model, tmp_path, network, "onnxruntime")
        settings = load_pipeline(onnx_repository / "preprocess/1/pose.json").settings
        (tmp_path / "model.engine").write_bytes(b"engine")
        repository = write_repository(tmp_path / "trt", onnx, "tensorrt", MAX_BATCH, settings,
                                      tmp_path / "model.engine")
    else:
        _, repository, _ = export(write_model, tmp_path, network, backend)

    configs = {p.parent.name: read_config(p) for p in repository.glob("*/config.pbtxt")}
    assert set(configs) == {"pose", "preprocess", "model", "postprocess"}
    ensemble, model = configs["pose"], configs["model"]
    assert ensemble.platform == "ensemble" and [s.model_name for s in ensemble.ensemble_scheduling.step] == [
        "preprocess", "model", "postprocess"]
    assert (model.platform or model.backend) == {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan",
                                                 "python": "python"}[backend]
    assert model.max_batch_size == MAX_BATCH and model.HasField("dynamic_batching")
    assert configs["preprocess"].backend == configs["postprocess"].backend == "python"
    # Every tensor a step reads is the ensemble's input or an earlier step's output.
    available = {t.name for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        assert set(step.input_map.values()) <= available, step.model_name
        available |= set(step.output_map.values())
    assert {t.name for t in ensemble.output} <= available
    network_file = {"tensorrt": "model.plan"}.get(backend, "model.onnx")
    assert (repository / "model/1" / network_file).is_file()
    assert (repository / "pose/pose_workloads/serving/triton_models.py").is_file()
    assert ("BOXES" in {t.name for t in ensemble.input}) == (network == "simple-pose")


def test_tensorrt_backend_without_an_engine_is_refused_before_any_work(write_model, tmp_path, capsys):
    model = write_model(tmp_path / "model.pth", "simple-pose", (64, 48))
    code = workload(["simple-pose", "export", "-m", str(model), "-o", str(tmp_path / "m.onnx"),
                     "--triton_repository", str(tmp_path / "repo"), "--triton_backend", "tensorrt"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--engine_file" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth"]


def test_a_folder_that_is_not_a_repository_is_not_overwritten(write_model, tmp_path, capsys):
    model = write_model(tmp_path / "model.pth", "simple-pose", (64, 48))
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo/notes.txt").write_text("mine")
    code = workload(["simple-pose", "export", "-m", str(model), "-o", str(tmp_path / "m.onnx"), "--triton_repository",
                     str(tmp_path / "repo")])
    assert code == 2 and "not a pose Triton repository" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "repo").iterdir()] == ["notes.txt"] and not (tmp_path / "m.onnx").exists()


def test_multi_scale_bpnet_is_refused_naming_the_field(write_model, tmp_path, capsys):
    model = write_model(tmp_path / "model.pth", "bpnet", (64, 64), BPNET_CONFIG)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"multi_scale_inference": True}))
    code = workload(["bpnet", "export", "-m", str(model), "-o", str(tmp_path / "m.onnx"), "--inference_spec", str(spec),
                     "--triton_repository", str(tmp_path / "repo")])
    assert code == 2 and "multi_scale_inference" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists() and not (tmp_path / "m.onnx").exists()


# --- served by tritonserver ------------------------------------------------------------------------

def _require_server() -> None:
    if find_tritonserver() is None:
        if os.environ.get("POSE_REQUIRE_TRITON") == "1":
            pytest.fail("POSE_REQUIRE_TRITON=1 but no tritonserver: `make venv` installs nvidia-pytriton")
        pytest.skip("no tritonserver (pip install --no-deps nvidia-pytriton)")


@pytest.fixture(scope="module", params=["simple-pose", "bpnet"])
def served(request, tmp_path_factory, write_model):
    """(network, onnx, inference flags, server) for one network; the server is stopped after the
    module whatever happened."""
    _require_server()
    tmp = tmp_path_factory.mktemp(request.param)
    onnx, repository, flags = export(write_model, tmp, request.param)
    with running_server(repository) as server:
        yield request.param, onnx, flags, server


def _boxes(coco_mini, name: str) -> np.ndarray:
    from pose_workloads.detections import read_boxes

    found = read_boxes(coco_mini.detections).get(int(Path(name).stem), [])
    return np.array([b for b, _ in found], np.float32).reshape(-1, 4)


def test_triton_finds_the_keypoints_pose_inference_finds(served, coco_mini, tmp_path):
    network, onnx, flags, server = served
    results = tmp_path / "results"
    if network == "simple-pose":
        assert workload(["simple-pose", "inference", "-m", str(onnx), "--input", str(coco_mini.images), "-r",
                         str(results),
                         "--boxes", str(coco_mini.detections)]) == 0
        expected: dict[str, list] = {}
        for entry in json.loads((results / "keypoints_results.json").read_text()):
            expected.setdefault(entry["file_name"], []).append(np.reshape(entry["keypoints"], (-1, 3)))
        rounding = 5e-4  # the file keeps 3 decimals
    else:
        assert workload(["bpnet", "inference", *flags, "--model_filename", str(onnx), "--input", str(coco_mini.images),
                         "--results_dir", str(results)]) == 0
        frames = json.loads((results / "detections.json").read_text())["frames"]
        keypoints = json.loads((results / "detections.json").read_text())["metadata"]["keypoints"]
        expected = {f["file"]: [np.array([p["keypoints"].get(k, [0, 0, 0]) for k in keypoints]) for p in f["people"]]
                    for f in frames}
        rounding = 5e-3  # the file keeps 2 decimals

    compared = 0
    for image in sorted(coco_mini.images.glob("*.jpg")):
        people = infer(server.url, image.read_bytes(),
                       _boxes(coco_mini, image.name) if network == "simple-pose" else None)
        want = np.array(expected.get(image.name, []), np.float32).reshape(-1, *people.keypoints.shape[1:])
        assert people.keypoints.shape == want.shape, image.name  # the same people
        np.testing.assert_allclose(people.keypoints, want, atol=rounding + 1e-3, rtol=0)
        compared += len(want)
    assert compared >= 8  # enough people on coco-mini that the comparison means something


def test_triton_matches_the_inference_pipeline_to_a_thousandth_of_a_pixel(served, coco_mini):
    """The same comparison without the result files' rounding: `pose inference`'s own functions."""
    from pose_workloads.media import read_image

    network, onnx, flags, server = served
    if network == "simple-pose":
        from pose_workloads.runtime import load_predictor
        from pose_workloads.simple_pose.pipeline import EvalSettings, predict_people

        predictor = load_predictor(onnx, device="cpu")
        run = lambda image, name: predict_people(lambda x: predictor(x)[0], image, _boxes(coco_mini, name),  # noqa: E731
                                                 predictor.info.pose_config, tuple(predictor.info.input_size),
                                                 EvalSettings(batch_size=8))
    else:
        from argparse import Namespace

        from pose_workloads.bpnet.pipeline import predict_people, prepare

        _, _, opened, settings = prepare(Namespace(key=None, inference_spec=flags[1], overrides=[], model=str(onnx)))
        pose_config = opened.predictor.info.pose_config
        run = lambda image, name: predict_people(opened.predictor, image, settings, pose_config).keypoints  # noqa: E731
    for image_path in sorted(coco_mini.images.glob("*.jpg")):
        want = run(read_image(image_path), image_path.name)
        got = infer(server.url, image_path.read_bytes(),
                    _boxes(coco_mini, image_path.name) if network == "simple-pose" else None)
        assert got.keypoints.shape == want.shape
        assert np.abs(got.keypoints - want).max(initial=0.0) <= 1e-3, image_path.name


def test_malformed_requests_get_a_triton_error_and_the_server_lives_on(served, coco_mini):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    network, _, _, server = served
    boxes = np.array([[0, 0, 100, 100]], np.float32) if network == "simple-pose" else None
    with pytest.raises(InferenceServerException, match="cannot be decoded as an image"):
        infer(server.url, b"this is not an image", boxes)

    wrong = [httpclient.InferInput("IMAGE", [4], "FP32")]
    wrong[0].set_data_from_numpy(np.zeros(4, np.float32))
    if boxes is not None:
        wrong.append(httpclient.InferInput("BOXES", [1, 4], "FP32"))
        wrong[1].set_data_from_numpy(boxes)
    with pytest.raises(InferenceServerException, match="data-type"):
        httpclient.InferenceServerClient(server.url).infer("pose", wrong)

    image = (coco_mini.images / "000000000785.jpg").read_bytes()
    if network == "simple-pose":
        with pytest.raises(InferenceServerException, match="BOXES"):
            infer(server.url, image, np.zeros((0, 4), np.float32))
    assert server.process.poll() is None
    assert infer(server.url, image, boxes).keypoints.shape[1:] == (17, 3)
