"""Preemption-safe training (pose_workloads.training.preemption) on the toy job of test_train:
SIGTERM/SIGUSR1 mid-epoch stop every rank after the same step, rank 0 writes a step checkpoint,
the run exits 75, and the resumed run ends with the uninterrupted run's weights.

The module doubles as the toy training script (`python test_preemption.py RESULTS ...`, or under
torchrun) so that the 2-rank case runs in real separate processes with real signals.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import ROOT, ToyData, final_weights, read_metrics, toy_job

from pose_workloads.exit_codes import PREEMPTED
from pose_workloads.training.checkpoint import CHECKPOINT_LAST, set_rng_state
from pose_workloads.training.job import Schedule
from pose_workloads.training.loop import run_training
from pose_workloads.training.preemption import Preempted

HERE = Path(__file__).resolve()


def _assert_same_weights(got_dir: Path, want_dir: Path) -> None:
    want, got = final_weights(want_dir), final_weights(got_dir)
    for k in want:
        assert (got[k] - want[k]).abs().max().item() <= 1e-6, k


def _signal_at(step: int, signum: int, loss_fn):
    """A loss function that sends `signum` to this process during global step `step` (0-based)."""
    calls = {"n": 0}

    def loss(outputs, batch):
        if calls["n"] == step:
            os.kill(os.getpid(), signum)
        calls["n"] += 1
        return loss_fn(outputs, batch)

    return loss


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_signal_mid_epoch_checkpoints_the_step_and_resume_matches_uninterrupted(tmp_path, signum):
    torch.set_num_threads(1)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    # 64 samples / batch 16 = 4 steps an epoch; noise from NumPy's global RNG, so the RNG
    # states at the step boundary matter, and a step schedule that changes mid-run.
    settings = dict(epochs=3, optimizer="sgd", lr=0.05, schedule=Schedule(kind="step", steps=(1.5,), factor=0.5))
    run_training(toy_job(straight, **settings))

    job = toy_job(stopped, **settings)
    job.loss_fn = _signal_at(5, signum, job.loss_fn)  # epoch 2, its second step
    previous = signal.getsignal(signum)
    with pytest.raises(Preempted) as err:
        run_training(job)
    assert err.value.exit_code == PREEMPTED == 75
    assert signal.getsignal(signum) is previous  # the loop's handler is gone again
    saved = torch.load(stopped / CHECKPOINT_LAST, weights_only=True)
    assert (saved["epoch"], saved["mid_epoch"]["step"]) == (1, 2)
    assert not (stopped / "model_final.pth").exists()
    assert [r["epoch"] for r in read_metrics(stopped)] == [1]

    run_training(toy_job(stopped, **settings))
    _assert_same_weights(stopped, straight)
    assert [r["epoch"] for r in read_metrics(stopped)] == [1, 2, 3]
    assert [r["loss"] for r in read_metrics(stopped)] == pytest.approx([r["loss"] for r in read_metrics(straight)],
                                                                       rel=1e-6)


def test_a_stop_at_an_epoch_end_keeps_the_epoch_checkpoint(tmp_path):
    torch.set_num_threads(1)
    job = toy_job(tmp_path, epochs=3)
    job.loss_fn = _signal_at(3, signal.SIGTERM, job.loss_fn)  # the last step of epoch 1
    with pytest.raises(Preempted, match="after epoch 1"):
        run_training(job)
    saved = torch.load(tmp_path / CHECKPOINT_LAST, weights_only=True)
    assert saved["epoch"] == 1 and "mid_epoch" not in saved


def test_cuda_rng_states_are_restored_only_for_devices_that_exist():
    state = {"torch": torch.get_rng_state(), "numpy": ["MT19937", torch.zeros(624, dtype=torch.int64), 624, 0, 0.0],
             "python": [3, [0] * 624 + [624]],
             # A checkpoint from 8 GPUs: more devices than this machine has (none on CPU).
             "cuda": [torch.zeros(16, dtype=torch.uint8)] * (torch.cuda.device_count() + 8)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all() + [torch.cuda.get_rng_state(0)] * 8
    set_rng_state(state)  # no "invalid device" error


def _run(results: Path, *args: str, nproc: int = 1, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, str(HERE), str(results), *args]
    else:
        cmd = [sys.executable, "-m", "pose_workloads.torchrun", "--nproc_per_node", str(nproc), "--master_port",
               str(29700 + os.getpid() % 200), str(HERE), str(results), *args]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=stdout, text=True)


@pytest.mark.slow
def test_sigterm_to_one_of_two_ranks_stops_both_after_the_same_step_and_resume_matches(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    common = ["--epochs", "3", "--delay", "0.02"]
    reference = _run(straight, *common, nproc=2)
    assert reference.wait(timeout=300) == 0
    proc = _run(stopped, *common, nproc=2, stdout=subprocess.PIPE)
    for line in proc.stdout:  # rank 0's progress: one line a step
        if "epoch 2/3 [2/12]" in line:
            break
    os.kill(int((stopped / "pid-rank1").read_text()), signal.SIGTERM)  # one rank only, as a lost node
    proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED  # pose_workloads.torchrun: the first failed rank's code
    saved = torch.load(stopped / CHECKPOINT_LAST, weights_only=True)
    assert saved["epoch"] == 1, saved["epoch"]
    assert 0 < saved.get("mid_epoch", {}).get("step", -1) < 12 and len(saved["mid_epoch"]["rng"]) == 2

    fewer = tmp_path / "fewer"
    shutil.copytree(stopped, fewer)
    assert _run(stopped, *common, nproc=2).wait(timeout=300) == 0
    _assert_same_weights(stopped, straight)

    # On fewer ranks than the checkpoint saw (a smaller allocation): it resumes, skipping as many
    # samples, and finishes (not bit-exact: the sampler's shards differ).
    (fewer / "pid-rank1").unlink()
    assert _run(fewer, *common, nproc=1).wait(timeout=300) == 0
    assert (fewer / "model_final.pth").is_file()


def _main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"pid-rank{os.environ.get('RANK', '0')}").write_text(str(os.getpid()))
    # 96 samples, batch 4 a rank: 12 steps an epoch with 2 ranks.
    data = ToyData(size=96, delay_s=args.delay)
    try:
        run_training(toy_job(args.results_dir, epochs=args.epochs, batch_size=4, train_dataset=data, optimizer="sgd",
                             lr=0.05, schedule=Schedule(kind="step", steps=(2,), factor=0.5)))
    except Preempted:
        return PREEMPTED
    return 0


if __name__ == "__main__":
    sys.exit(_main())
