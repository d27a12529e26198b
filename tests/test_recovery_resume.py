"""A run killed with SIGKILL mid-epoch resumes from its last checkpoint and ends exactly like an uninterrupted run.

The training script is this file run as ``python test_recovery_resume.py CHECKPOINT_DIR OUTPUT [DELAY]``.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve()
EPOCHS, SAMPLES, BATCH, CHECKPOINT_EVERY = 3, 320, 32, 4  # 10 steps per epoch


def train(checkpoint_dir: str, output: str, delay: float) -> None:
    """Gradual pruning with dropout and AdamW: every source of state a resume must restore."""
    from torch import nn

    from secateurs.core.masks import mask_state_dict
    from secateurs.recovery import Gradual, PruningController, fit

    torch.set_num_threads(1)
    torch.manual_seed(1234)
    x = torch.randn(SAMPLES, 12)
    y = (x[:, :3].sum(dim=1) > 0).long()
    model = nn.Sequential(nn.Linear(12, 48), nn.ReLU(), nn.Dropout(0.2), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 2))
    controller = PruningController(model, Gradual(0.8, begin=2, end=24, frequency=3), unit="step")

    def progress(step: int) -> None:
        print(f"step {step}", flush=True)
        time.sleep(delay)

    result = fit(model, (x, y), epochs=EPOCHS, controller=controller, lr=3e-3, weight_decay=0.01, batch_size=BATCH,
                 checkpoint_dir=checkpoint_dir, checkpoint_every=CHECKPOINT_EVERY, seed=7, on_batch_end=progress)
    torch.save({"masks": mask_state_dict(result.model), "state": result.model.state_dict(),
                "resumed_from": result.resumed_from, "steps": result.steps}, output)


def run(checkpoint_dir: Path, output: Path, delay: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(SCRIPT), str(checkpoint_dir), str(output), str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    from secateurs.recovery.checkpoint import CheckpointManager

    straight, killed = run(tmp_path / "straight", tmp_path / "straight.pt"), None
    try:
        killed = run(tmp_path / "killed", tmp_path / "killed.pt", delay=0.1)
        for line in killed.stdout:
            if line.strip() == "step 13":  # mid-epoch 2: last checkpoint at step 12 (batch 2 of epoch 2)
                os.kill(killed.pid, signal.SIGKILL)
                break
        killed.wait(timeout=60)
        assert killed.returncode == -signal.SIGKILL
        finish(straight)
    finally:
        for process in (straight, killed):
            if process is not None and process.poll() is None:
                process.kill()
    assert not (tmp_path / "killed.pt").exists()

    manager = CheckpointManager(tmp_path / "killed")
    for _, path in manager.checkpoints():  # every file that exists is complete
        assert manager.load(path)["step"] > 0
    last = manager.load()
    assert 0 < last["batch"] < SAMPLES // BATCH, "the kill should land mid-epoch"

    resumed = run(tmp_path / "killed", tmp_path / "killed.pt")
    finish(resumed)
    a, b = torch.load(tmp_path / "straight.pt"), torch.load(tmp_path / "killed.pt")
    assert b["resumed_from"] is not None and a["resumed_from"] is None
    assert a["steps"] == b["steps"] == EPOCHS * SAMPLES // BATCH
    assert a["masks"].keys() == b["masks"].keys() and len(a["masks"]) == 2
    for name in a["masks"]:
        assert torch.equal(a["masks"][name], b["masks"][name]), name
    for name in a["state"]:
        assert torch.equal(a["state"][name], b["state"][name]), name


if __name__ == "__main__":
    train(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
