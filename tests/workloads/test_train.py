"""The training loop (pose_workloads.training) on a toy regression job.

The module doubles as the toy training script (`python test_train.py RESULTS ...`, or under
torchrun) so that kill -9 / resume and DDP run the loop in real separate processes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pose_workloads.specs import COCO17
from pose_workloads.training.checkpoint import CHECKPOINT_LAST
from pose_workloads.training.job import Schedule, TrainJob
from pose_workloads.training.loop import NonFiniteLoss, run_training
from pose_workloads.training.optim import learning_rate, soft_start_annealing_lr

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]


class ToyData(torch.utils.data.Dataset):
    """y = W x + noise; the noise is drawn from NumPy's global RNG to check the loop seeds it."""

    def __init__(self, size: int = 64, noise: float = 0.01, delay_s: float = 0.0):
        rng = np.random.default_rng(123)
        self.x = rng.normal(size=(size, 8)).astype(np.float32)
        self.w = rng.normal(size=(8, 2)).astype(np.float32)
        self.noise, self.delay_s = noise, delay_s

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if self.delay_s:
            time.sleep(self.delay_s)
        x = self.x[i] + self.noise * np.random.normal(size=8).astype(np.float32)
        return {"image": torch.from_numpy(x), "target": torch.from_numpy(self.x[i] @ self.w)}


def toy_loss(outputs, batch):
    loss = nn.functional.mse_loss(outputs, batch["target"])
    return loss, {"mse": loss.detach()}


def toy_job(results_dir: Path, **overrides) -> TrainJob:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    settings = dict(
        network="toy",
        model=model,
        model_config={"name": "toy"},
        pose_config=COCO17,
        input_size=(32, 32),
        train_dataset=ToyData(),
        loss_fn=toy_loss,
        results_dir=results_dir,
        epochs=3,
        batch_size=16,
        lr=0.03,
        schedule=Schedule(kind="constant"),
        checkpoint_every=1,
        amp=False,
    )
    settings.update(overrides)
    return TrainJob(**settings)


def read_metrics(results_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (results_dir / "metrics.jsonl").read_text().splitlines()]


def final_weights(results_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(results_dir / "model_final.pth", weights_only=True)["state_dict"]


def _free_port() -> int:
    # Not a port derived from our pid: two DDP tests in one session, and other sessions, would share it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_toy_script(results_dir: Path, *args: str, nproc: int = 1, **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, str(HERE), str(results_dir), *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(_free_port()), str(HERE), str(results_dir), *args]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, **popen)


# ------------------------------------------------------------------------------------------------


def test_loss_decreases_and_results_dir_is_complete(tmp_path):
    torch.set_num_threads(1)
    evaluations = []

    def evaluate(model):
        evaluations.append(model.training)
        return {"AP": 0.5 + 0.1 * len(evaluations)}

    result = run_training(toy_job(tmp_path, epochs=4, evaluate_fn=evaluate, eval_every=2, checkpoint_every=2))
    records = read_metrics(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]
    assert evaluations == [False, False]  # epochs 2 and 4, model in eval mode
    assert [("val" in r) for r in records] == [False, True, False, True]
    assert result["best_ap"] == pytest.approx(0.7)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"checkpoint_last.pth", "checkpoint_epoch_002.pth", "checkpoint_epoch_004.pth", "model_best.pth",
            "model_final.pth", "metrics.jsonl", "curves.png", "tensorboard"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
    model = torch.load(tmp_path / "model_best.pth", weights_only=True)
    assert model["network"] == "toy" and model["input_size"] == [32, 32] and model["epoch"] == 4
    assert model["pose_config"]["keypoints"][0] == "nose"
    assert not any(k.startswith("module.") for k in model["state_dict"])


def test_rerun_after_completion_resumes_and_does_not_retrain(tmp_path):
    torch.set_num_threads(1)
    run_training(toy_job(tmp_path, epochs=2))
    first = final_weights(tmp_path)
    run_training(toy_job(tmp_path, epochs=2))
    assert len(read_metrics(tmp_path)) == 2
    for k, v in final_weights(tmp_path).items():
        assert torch.equal(v, first[k])


def test_checkpoint_of_another_network_is_refused(tmp_path):
    from pose_workloads.errors import BadInput

    torch.set_num_threads(1)
    run_training(toy_job(tmp_path, epochs=1))
    with pytest.raises(BadInput, match="another results directory"):
        run_training(toy_job(tmp_path, epochs=2, network="bpnet"))


def test_resume_after_kill_9_mid_epoch_matches_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # 48 samples x 20 ms: an epoch lasts about a second, long enough to kill it half-way.
    slow = ["--epochs", "3", "--delay", "0.02"]
    reference = run_toy_script(straight, *slow, stdout=subprocess.DEVNULL)  # meanwhile, in parallel
    proc = run_toy_script(killed, *slow, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / CHECKPOINT_LAST).exists():
        assert proc.poll() is None and time.time() < deadline, "the first epoch never finished"
        time.sleep(0.02)
    time.sleep(0.4)  # into the second epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(killed / CHECKPOINT_LAST, weights_only=True)["epoch"] == 1
    assert not (killed / "model_final.pth").exists()

    assert run_toy_script(killed, *slow).wait(timeout=120) == 0
    assert reference.wait(timeout=120) == 0
    assert [r["epoch"] for r in read_metrics(killed)] == [1, 2, 3]
    want, got = final_weights(straight), final_weights(killed)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
    assert [r["loss"] for r in read_metrics(killed)] == pytest.approx([r["loss"] for r in read_metrics(straight)],
                                                                      rel=1e-5)


def test_ddp_on_two_cpu_processes_matches_one_process_on_the_same_global_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    # No per-sample noise: the NumPy streams differ per rank (seeded from rank), the data must not.
    common = ["--epochs", "2", "--noise", "0"]
    single = run_toy_script(one, *common, "--batch", "16", stdout=subprocess.DEVNULL)
    ddp = run_toy_script(two, *common, "--batch", "8", nproc=2, stdout=subprocess.PIPE, text=True)
    out, _ = ddp.communicate(timeout=180)
    assert ddp.returncode == 0
    assert single.wait(timeout=180) == 0
    # Both ranks tore their process group down: none of its worker threads outlives run_training
    # (left running, they could abort the rank at exit, after a finished run). gloo's transport loop
    # may still be closing the peer's connections for a moment, so it is not counted.
    threads_left = [line for line in out.splitlines() if line.startswith("threads after training:")]
    assert len(threads_left) == 2 and not any("pt_gloo_runloop" in line for line in threads_left), threads_left
    losses_one = [r["loss"] for r in read_metrics(one)]
    losses_two = [r["loss"] for r in read_metrics(two)]
    assert losses_two == pytest.approx(losses_one, rel=1e-4)
    want, got = final_weights(one), final_weights(two)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5)


def test_frozen_batchnorm_makes_two_ranks_train_as_one_process_of_the_same_global_batch(tmp_path):
    """BatchNorm normalises each rank's half batch on its own; frozen, it uses its running
    statistics, and 2 gloo ranks end with the weights of 1 process."""
    one, two, moving = tmp_path / "one", tmp_path / "two", tmp_path / "moving"
    common = ["--epochs", "2", "--noise", "0", "--batchnorm"]
    single = run_toy_script(one, *common, "--freeze_batchnorm", "--batch", "16", stdout=subprocess.DEVNULL)
    unfrozen = run_toy_script(moving, *common, "--batch", "16", stdout=subprocess.DEVNULL)
    assert run_toy_script(two, *common, "--freeze_batchnorm", "--batch", "8", nproc=2).wait(timeout=180) == 0
    assert single.wait(timeout=180) == 0 and unfrozen.wait(timeout=180) == 0
    want, got = final_weights(one), final_weights(two)
    assert got.keys() == want.keys() == final_weights(moving).keys()  # model files load as before
    assert max((got[k].double() - want[k].double()).abs().max().item() for k in want) <= 1e-6
    assert not torch.equal(want["1.weight"], torch.ones(16))  # the BN scale still trains
    assert torch.equal(want["1.running_mean"], torch.zeros(16)) and int(want["1.num_batches_tracked"]) == 0
    # Not frozen, the same run moves the running statistics.
    assert final_weights(moving)["1.running_mean"].abs().max() > 1e-3


def test_non_finite_loss_names_its_parts_and_exits_1(tmp_path):
    torch.set_num_threads(1)

    def exploding(outputs, batch):
        loss = outputs.sum() * float("nan")
        return loss, {"heatmap": loss.detach(), "paf": torch.tensor(0.25)}

    # Raised, not sys.exit: `python -m pose_workloads` prints it as one line and exits 1.
    with pytest.raises(NonFiniteLoss) as err:
        run_training(toy_job(tmp_path, loss_fn=exploding))
    assert err.value.exit_code == 1
    assert "Loss is nan" in str(err.value) and "'paf': 0.25" in str(err.value)
    assert not (tmp_path / CHECKPOINT_LAST).exists()


def test_a_failed_task_is_one_error_line_and_exit_1(monkeypatch, capsys):
    import pose_workloads.__main__ as entry
    import pose_workloads.info

    def diverging(args):
        raise NonFiniteLoss("Loss is nan, stopping training (epoch 1, step 1); loss parts: {'paf': 0.25}")

    monkeypatch.setattr(pose_workloads.info, "main", diverging)
    assert entry.main(["info"]) == 1
    assert capsys.readouterr().err == (
        "error: Loss is nan, stopping training (epoch 1, step 1); loss parts: {'paf': 0.25}\n")


def test_stale_temp_file_from_a_killed_save_is_removed(tmp_path):
    torch.set_num_threads(1)
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / ".checkpoint_last.pth.tmp").write_bytes(b"half a file")
    run_training(toy_job(tmp_path, epochs=1))
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    assert torch.load(tmp_path / CHECKPOINT_LAST, weights_only=True)["epoch"] == 1


def test_l1_kernel_regularization_is_added_to_the_loss(tmp_path):
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Conv1d(1, 1, 1), nn.Flatten(), nn.Linear(8, 2))

    def loss_fn(outputs, batch):
        loss = nn.functional.mse_loss(outputs, batch["target"])
        return loss, {"mse": loss.detach()}

    class Unsqueezed(ToyData):
        def __getitem__(self, i):
            item = super().__getitem__(i)
            return {**item, "image": item["image"][None]}

    job = toy_job(tmp_path, model=model, train_dataset=Unsqueezed(), loss_fn=loss_fn, epochs=1, lr=1e-9,
                  regularization="l1", regularization_factor=0.5)
    kernel = model[0].weight.detach().abs().sum().item()
    run_training(job)
    parts = read_metrics(tmp_path)[0]["loss_parts"]
    assert parts["regularization"] == pytest.approx(0.5 * kernel, rel=1e-4)
    assert read_metrics(tmp_path)[0]["loss"] == pytest.approx(parts["mse"] + parts["regularization"], rel=1e-4)


def test_stagewise_lr_multipliers_scale_each_group(tmp_path):
    torch.set_num_threads(1)

    def groups(model):
        return [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr_mult": 4.0}]

    job = toy_job(tmp_path, epochs=1, param_groups=groups, optimizer="sgd", lr=0.01,
                  schedule=Schedule(kind="step", steps=(0.5,), factor=0.1))
    from pose_workloads.training.optim import build_optimizer

    optimizer = build_optimizer(job, job.model)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.04])
    run_training(job)
    state = torch.load(tmp_path / CHECKPOINT_LAST, weights_only=True)
    # After the step at half an epoch: both groups x 0.1, the multiplier kept.
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == pytest.approx([0.001, 0.004])


# ---- schedules: pure functions -------------------------------------------------------------


def test_step_schedule_divides_at_each_step():
    s = Schedule(kind="step", steps=(90, 120), factor=0.1)
    assert [learning_rate(s, 1e-3, e, 140) for e in (0, 89.9, 90, 119, 120, 139)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5]
    )


def test_cosine_schedule_goes_from_base_to_min():
    s = Schedule(kind="cosine", min_lr=1e-5)
    assert learning_rate(s, 1e-3, 0, 10) == pytest.approx(1e-3)
    assert learning_rate(s, 1e-3, 5, 10) == pytest.approx((1e-3 + 1e-5) / 2)
    assert learning_rate(s, 1e-3, 10, 10) == pytest.approx(1e-5)
    values = [learning_rate(s, 1e-3, e, 10) for e in np.linspace(0, 10, 21)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_warmup_ramps_linearly_then_hands_over():
    s = Schedule(kind="constant", warmup_epochs=2)
    assert learning_rate(s, 1.0, 0, 10) == pytest.approx(0.001)
    assert learning_rate(s, 1.0, 1, 10) == pytest.approx(0.5005)
    assert learning_rate(s, 1.0, 2, 10) == 1.0


def test_soft_start_annealing_shape():
    base, low = 2e-5, 8e-8
    lr = lambda p: soft_start_annealing_lr(p, base, low, 0.05, 0.5)  # noqa: E731
    assert lr(0.0) == pytest.approx(low)
    # Exponential ramp: half-way through the soft start is the geometric mean.
    assert lr(0.025) == pytest.approx(math.sqrt(base * low))
    assert lr(0.05) == pytest.approx(base) and lr(0.3) == pytest.approx(base) and lr(0.5) == pytest.approx(base)
    assert lr(0.75) == pytest.approx(math.sqrt(base * low))
    assert lr(1.0) == pytest.approx(low)
    ramp = [lr(p) for p in np.linspace(0, 0.05, 11)]
    anneal = [lr(p) for p in np.linspace(0.5, 1.0, 11)]
    assert all(a < b for a, b in zip(ramp, ramp[1:])) and all(a > b for a, b in zip(anneal, anneal[1:]))
    # Through the loop's schedule the progress is epoch / epochs.
    s = Schedule(kind="soft_start_annealing", min_lr=low, soft_start=0.05, annealing=0.5)
    assert learning_rate(s, base, 75, 100) == pytest.approx(lr(0.75))


# ---- ImageGroupedSampler: an epoch's order by image ------------------------------------------


def _decodes(order: list[int], groups: list[int], batch_size: int, workers: int) -> int:
    """Images decoded by DataLoader workers (batch k to worker k % workers) that each keep
    batch_size images, least recently used out, as TopDownDataset's cache."""
    from collections import OrderedDict

    caches = [OrderedDict() for _ in range(workers)]
    decodes = 0
    for k in range(0, len(order), batch_size):
        cache = caches[(k // batch_size) % workers]
        for image in (groups[i] for i in order[k:k + batch_size]):
            if image in cache:
                cache.move_to_end(image)
                continue
            decodes += 1
            while len(cache) >= batch_size:
                cache.popitem(last=False)
            cache[image] = True
    return decodes


@pytest.mark.parametrize("workers", [1, 3])
def test_image_grouped_sampler_batches_hold_batch_size_images_each_decoded_once(workers):
    from pose_workloads.training.data import ImageGroupedSampler

    groups = [image for image, people in enumerate(np.random.default_rng(0).integers(1, 8, 400))
              for _ in range(people)]  # 400 images of 1-7 people, 1,582 samples
    sampler = ImageGroupedSampler(groups, num_replicas=1, rank=0, seed=5, batch_size=16, lanes=workers)
    orders = []
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(len(groups))) and len(sampler) == len(groups)
        images_per_batch = [len({groups[i] for i in order[k:k + 16]}) for k in range(0, len(order), 16)]
        assert min(images_per_batch[:90]) == 16  # one person of each of 16 images, as shuffled people
        # each worker decodes its images once (a few twice where the lanes end)
        assert 400 <= _decodes(order, groups, 16, workers) <= 400 * 1.03
        orders.append(order)
    assert orders[0] == orders[2] and orders[0] != orders[1]  # a function of (seed, epoch)
    shuffled = [int(i) for i in np.random.default_rng(0).permutation(len(groups))]
    assert _decodes(shuffled, groups, 16, workers) > 1000  # people shuffled: most samples decode


def test_image_grouped_sampler_splits_images_between_ranks_in_equal_shares():
    from pose_workloads.training.data import ImageGroupedSampler

    groups = [i // 3 for i in range(50)] + [99] * 7  # 17 images of 3, 1 of 1 and 1 of 7
    ranks = [list(ImageGroupedSampler(groups, num_replicas=2, rank=r, seed=2, batch_size=4)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 29  # ceil(57 / 2): a share cut or padded
    images = [{groups[i] for i in order} for order in ranks]
    assert not images[0] & images[1]  # each image's people on one rank


# ------------------------------------------------------------------------------------------------


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batchnorm", action="store_true", help="a BatchNorm1d after the first layer")
    parser.add_argument("--freeze_batchnorm", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = ToyData(size=48, noise=args.noise, delay_s=args.delay)
    torch.manual_seed(0)
    layers = [nn.Linear(8, 16), *([nn.BatchNorm1d(16)] if args.batchnorm else []), nn.ReLU(), nn.Linear(16, 2)]
    run_training(toy_job(args.results_dir, model=nn.Sequential(*layers), freeze_batchnorm=args.freeze_batchnorm,
                         epochs=args.epochs, batch_size=args.batch, train_dataset=data,
                         workers=args.workers, optimizer="sgd", lr=0.05,
                         schedule=Schedule(kind="step", steps=(2,), factor=0.5)))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        threads = sorted((task / "comm").read_text().strip() for task in Path("/proc/self/task").iterdir())
        print("threads after training:", os.environ["RANK"], threads, flush=True)


if __name__ == "__main__":
    _main()

