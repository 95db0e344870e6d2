"""The toy task really learns: demos -> PROGRESSOR pretraining -> DrQ-v2 on the PROGRESSOR reward
with window relabelling and push-back refinement, end to end through ``train_mw.py``, beats a
uniform random policy on the very same eval episodes by a wide margin.

This is ``python DrM/train_mw.py task=toy-reach`` (what ``make demo`` runs) with its own settings
(precision chosen by the hardware, torch's default threads); demos and the reward checkpoint go to
a temporary folder, so ``DrM/pretrained_reward`` and ``DrM/expert_demos`` are neither needed nor
touched. About 15 minutes on a 2-core AVX2 CPU (README).
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "DrM" / "train_mw.py"
SEED = 1

SETTINGS: list[str] = []  # exactly the demo's settings
# Learning means: the mean success of the last three evals (20 episodes each) is at least
# MIN_SUCCESS and at least MIN_MARGIN above the uniform random policy's on the same episodes.
MIN_SUCCESS = 0.8
MIN_MARGIN = 0.5


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class _UniformAgent:
    """Uniform random actions in [-1, 1], whatever the mode."""

    def __init__(self, action_dim: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.action_dim = action_dim

    def act(self, obs, step, eval_mode):  # noqa: ARG002 - the Workspace's agent interface
        return self.rng.uniform(-1.0, 1.0, self.action_dim).astype(np.float32)


def random_policy_success(overrides: list[str], run_dir: Path, repeats: int = 5) -> float:
    """Mean eval success rate of a uniform random policy on the workspace's own eval episodes
    (same seed, placements and success rule), averaged over ``repeats`` action streams."""
    from hydra import compose, initialize_config_dir

    import drm
    from drm.workspace import Workspace

    with initialize_config_dir(config_dir=str(drm.DRM_ROOT / "cfgs"), version_base="1.3"):
        # reward_model=env: the eval success does not depend on the reward model
        cfg = compose("config", overrides=[*overrides, "reward_model=env", "save_video=false"])
    workspace = Workspace(cfg, run_dir)
    workspace._plot_eval_progress = lambda curves: None  # no reward model, nothing to plot
    rates = []
    for rep in range(repeats):
        workspace.agent = _UniformAgent(workspace.train_env.action_space.shape[0], seed=rep)
        rates.append(workspace.eval()["success_rate"])
    return float(np.mean(rates))


@pytest.mark.slow
def test_toy_reach_learns_well_above_random(tmp_path):
    overrides = ["task=toy-reach", f"seed={SEED}", *SETTINGS,
                 f"reward.checkpoint={tmp_path / 'reward' / 'toy-reach.pth'}", "reward.pretrain_if_missing=true",
                 f"exp_data_path={tmp_path / 'demos'}", "save_video=false", "save_snapshot=false"]
    random_success = random_policy_success(overrides, tmp_path / "random")

    run_dir = tmp_path / "run"
    start = time.time()
    proc = subprocess.run([sys.executable, str(SCRIPT), f"hydra.run.dir={run_dir}", *overrides], cwd=ROOT,
                          env={**os.environ, "MUJOCO_GL": "egl"}, capture_output=True, text=True, timeout=2400)
    elapsed = time.time() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "reward" / "toy-reach.pth").exists(), "the reward model was not pretrained"
    assert (run_dir / "learning_curve.png").exists()

    evals = _rows(run_dir / "eval.csv")
    curve = [(int(float(r["frame"])), float(r["success_rate"])) for r in evals]
    final = float(np.mean([success for _, success in curve[-3:]]))
    print(f"random policy {random_success:.2f}; learning curve {curve}; {elapsed:.0f} s")
    assert curve[-1][0] >= 12000
    assert final >= MIN_SUCCESS and final >= random_success + MIN_MARGIN, (
        f"last-three-evals success {final:.2f} (random policy {random_success:.2f}); curve {curve}")
