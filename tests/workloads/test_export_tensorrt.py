"""The TensorRT side of export that runs without TensorRT: optimization profiles, calibration
batches prepared exactly as evaluation prepares images, and the calibration cache."""

from __future__ import annotations

import types

import cv2
import numpy as np
import pytest

from pose_workloads.bpnet import pipeline
from pose_workloads.errors import BadInput
from pose_workloads.export import tensorrt
from pose_workloads.media import read_image
from pose_workloads.predictor import ModelInfo
from pose_workloads.simple_pose.pipeline import crop_boxes
from pose_workloads.specs import COCO17, BpnetInferenceSpec, BpnetNormalization


@pytest.fixture
def images(coco_mini) -> list:
    return sorted(coco_mini.images.glob("*.jpg"))


def _info(network: str, input_size=(256, 192), normalization=None) -> ModelInfo:
    return ModelInfo(network, COCO17, input_size, normalization=normalization)


def test_simple_pose_profile_is_the_crop_size_from_one_to_max_batch():
    profile = tensorrt.engine_profile(_info("simple-pose", (256, 192)), max_batch_size=16)

    assert profile == tensorrt.EngineProfile((1, 3, 256, 192), (16, 3, 256, 192), (16, 3, 256, 192))


@pytest.mark.parametrize("spec", [
    BpnetInferenceSpec(),  # TAO's infer_spec: 368x368, adjust_network_input
    BpnetInferenceSpec(input_shape=(288, 384), multi_scale_inference=True, scales=[0.5, 1.0, 1.5]),
    BpnetInferenceSpec(input_shape=(256, 320), keep_aspect_ratio_mode=None, multi_scale_inference=True,
                       scales=[1.0, 2.0]),
])
def test_bpnet_profile_covers_every_input_size_the_inference_spec_asks_for(spec):
    profile = tensorrt.engine_profile(_info("bpnet"), max_batch_size=4, inference_spec=spec)

    scales = spec.scales if spec.multi_scale_inference else [1.0]
    # Photos and video frames, landscape and portrait, up to 2:1.
    for image_hw in [(480, 640), (640, 480), (720, 1280), (1080, 1920), (1280, 720), (500, 500), (400, 800)]:
        for scale in scales:
            h, w = pipeline.plan_input(image_hw, spec.input_shape, spec.keep_aspect_ratio_mode, scale).network_hw
            assert profile.min[2] <= h <= profile.max[2] and profile.min[3] <= w <= profile.max[3], (image_hw, scale)
    assert profile.opt == (1, 3,
                           *pipeline.plan_input(spec.input_shape, spec.input_shape,
                                                spec.keep_aspect_ratio_mode).network_hw)
    assert profile.min[0] == 1 and profile.max[0] == 4
    assert all(lo <= mid <= hi for lo, mid, hi in zip(profile.min, profile.opt, profile.max))


def test_bpnet_profile_for_a_strict_spec_is_one_size_like_taos_engines():
    strict = BpnetInferenceSpec(input_shape=(288, 384), keep_aspect_ratio_mode="pad_image_input")

    profile = tensorrt.engine_profile(_info("bpnet"), max_batch_size=1, inference_spec=strict)

    assert profile.min == profile.opt == profile.max == (1, 3, 288, 384)


def test_simple_pose_calibration_image_is_the_evaluation_crop_of_the_whole_image(images):
    image = read_image(images[0])
    height, width = image.shape[:2]

    got = tensorrt.calibration_input(image, "simple-pose", (256, 192))

    crops, _, _ = crop_boxes(image, np.array([[0, 0, width, height]], np.float32), (256, 192))
    assert got.shape == (3, 256, 192) and got.dtype == np.float32
    np.testing.assert_array_equal(got, crops[0])


def test_bpnet_calibration_image_is_letterboxed_and_normalised_as_in_evaluation(images):
    image = read_image(images[1])
    normalization = {"image_scale": [255.0, 255.0, 255.0], "image_offset": [0.25, 0.5, 0.75]}

    got = tensorrt.calibration_input(image, "bpnet", (288, 384), normalization)

    plan = pipeline.plan_input(image.shape[:2], (288, 384), "pad_image_input")
    spec = BpnetInferenceSpec(input_shape=(288, 384), keep_aspect_ratio_mode="pad_image_input")
    settings, _ = pipeline.inference_settings(spec, BpnetNormalization.model_validate(normalization))
    np.testing.assert_array_equal(got, pipeline.prepare_input(image, plan, settings)[0])
    # Independently: the image, resized to fit with its aspect kept, at the top-left; black padding.
    h, w = plan.content_hw
    assert max(h / 288, w / 384) == pytest.approx(1.0, abs=0.01)
    resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    expected = resized / 255.0 - np.array([0.25, 0.5, 0.75], np.float32)
    np.testing.assert_allclose(got[:, :h, :w].transpose(1, 2, 0), expected, atol=1e-6)
    padding = np.concatenate([got[:, h:, :].reshape(3, -1), got[:, :, w:].reshape(3, -1)], axis=1)
    np.testing.assert_allclose(padding, np.array([[-0.25], [-0.5], [-0.75]]).repeat(padding.shape[1], 1))


def test_calibration_batches_have_the_opt_shape_and_drop_a_partial_batch(coco_mini, images, tmp_path):
    files = tensorrt.calibration_images(coco_mini.images)
    assert files == images
    info = _info("bpnet", normalization=None)

    batches = list(tensorrt.calibration_batches(files[:3], info, (2, 3, 64, 96), batches=8))

    assert [b.shape for b in batches] == [(2, 3, 64, 96)]  # 3 images: one full batch of 2
    expected = tensorrt.calibration_input(read_image(files[1]), "bpnet", (64, 96))
    np.testing.assert_array_equal(batches[0][1], expected)
    assert len(list(tensorrt.calibration_batches(files[:3], info, (1, 3, 64, 96), batches=2))) == 2
    # An undecodable file is skipped: the next image takes its place.
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    (again,) = tensorrt.calibration_batches([files[0], broken, files[1]], info, (2, 3, 64, 96), batches=1)
    np.testing.assert_array_equal(again, batches[0])


def test_an_empty_calibration_folder_names_the_flag(tmp_path):
    (tmp_path / "notes.txt").write_text("no images")
    with pytest.raises(BadInput, match="--cal_image_dir .*no images"):
        tensorrt.calibration_images(tmp_path)


class _FakeTensorRT(types.SimpleNamespace):
    """Just the calibrator base class: enough to exercise the cache handling without TensorRT."""

    class IInt8EntropyCalibrator2:
        def __init__(self):
            pass


def test_calibration_cache_is_read_when_present_and_written_atomically(tmp_path):
    cache = tmp_path / "cal.bin"
    calibrator = tensorrt._entropy_calibrator(_FakeTensorRT(), [], 1, cache)

    assert calibrator.read_calibration_cache() is None  # no cache yet: TensorRT reads images
    assert calibrator.get_batch(["images"]) is None  # no batches: calibration ends
    calibrator.write_calibration_cache(memoryview(b"TRT-1001-EntropyCalibration2\n"))
    assert cache.read_bytes() == b"TRT-1001-EntropyCalibration2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cal.bin"]
    assert tensorrt._entropy_calibrator(_FakeTensorRT(), [], 1, cache).read_calibration_cache() == cache.read_bytes()
    assert calibrator.get_batch_size() == 1


def test_engine_build_guard_names_the_tensorrt_image_and_the_gpu(tmp_path):
    reason = tensorrt.tensorrt_unavailable()
    if reason is None:
        pytest.skip("TensorRT and a GPU are here: the guard does not apply")
    profile = tensorrt.EngineProfile((1, 3, 64, 64), (1, 3, 64, 64), (1, 3, 64, 64))

    with pytest.raises(BadInput) as err:
        tensorrt.build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", profile, "fp16")

    message = str(err.value)
    assert "\n" not in message and "TensorRT image" in message and "NVIDIA GPU" in message and reason in message
    assert list(tmp_path.iterdir()) == []
