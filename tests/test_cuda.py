"""The CUDA paths, run where a GPU is present (``scripts/gpu_check.sh`` runs this file there); every
test is skipped on a machine without CUDA.

Covered: the reward model's training step and inference on ``cuda`` with the precision ``auto``
picks there (and fp32 vs bf16 agreement), the DrQ-v2 / DrM update, a tiny ``train_mw.py`` run with
``device=cuda``, and ``main_ours.py --distributed`` with the nccl backend in one process.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from video2reward import ProgressModel, load_reward_model
from video2reward.precision import resolve_precision

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
ROOT = Path(__file__).resolve().parents[1]


def frames(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_reward_model_trains_and_scores_on_cuda():
    precision = resolve_precision("auto", "cuda")
    torch.manual_seed(0)
    model = ProgressModel("convnet_spatial", 84, head="distance", amp=precision.amp,
                          channels_last=precision.channels_last).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = frames(24, 84)
    with precision.autocast("cuda"):
        mu, sigma = model(x[:8], x[8:16], x[16:])
    loss = (mu - 0.5).square().mean() + sigma.mean()
    loss.backward()
    opt.step()
    assert mu.device.type == "cuda" and torch.isfinite(loss)
    exact = model.predict(x[:8], x[8:16], x[16:])  # model.amp: the run's precision
    model.amp = False
    ref = model.predict(x[:8], x[8:16], x[16:])
    assert ref.loc.device.type == "cuda"
    assert (exact.loc - ref.loc).abs().max() < 0.02


def test_agent_update_on_cuda():
    from drm.agents import DrQV2Agent
    precision = resolve_precision("auto", "cuda")
    rng = np.random.default_rng(0)
    b, shape = 16, (9, 84, 84)
    batch = SimpleNamespace(obs=rng.integers(0, 256, (b, *shape), dtype=np.uint8),
                            next_obs=rng.integers(0, 256, (b, *shape), dtype=np.uint8),
                            action=rng.uniform(-1, 1, (b, 4)).astype(np.float32),
                            reward=rng.normal(size=(b, 1)).astype(np.float32),
                            discount=np.full((b, 1), 0.9, np.float32))
    for use_drm in (False, True):
        agent = DrQV2Agent(shape, (4,), "cuda", hidden_dim=64, num_expl_steps=0, use_drm=use_drm,
                           amp=precision.amp, channels_last=precision.channels_last)
        metrics = agent.update(batch, step=10)
        assert all(np.isfinite(v) for v in metrics.values())
        assert agent.act(batch.obs[0], 10, eval_mode=True).shape == (4,)


def test_train_mw_tiny_run_on_cuda(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "DrM" / "train_mw.py"), f"hydra.run.dir={run_dir}", "task=toy-reach",
           "device=cuda", "num_train_frames=240", "num_seed_frames=120", "eval_every_frames=120",
           "num_eval_episodes=2", "episode_length=15", "batch_size=16", "agent.hidden_dim=32",
           "agent.num_expl_steps=60", "online_finetune_every_step=10", "finetune.expert_batch_size=4",
           "finetune.replay_batch_size=4", f"reward.checkpoint={tmp_path / 'toy.pth'}",
           "reward.pretrain_if_missing=true", f"exp_data_path={tmp_path / 'demos'}", "demos.num_train=3",
           "demos.num_test=1", "pretrain.steps=10", "pretrain.batch_size=8", "save_video=false"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"precision: {resolve_precision('auto', 'cuda').name} (auto: " in proc.stdout
    assert (run_dir / "eval.csv").exists() and (run_dir / "snapshot.pt").exists()
    assert load_reward_model(tmp_path / "toy.pth", device="cuda").device.type == "cuda"


def test_ddp_nccl_one_process(tmp_path):
    data = tmp_path / "demos"
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("test", 1)):
        for j in range(count):
            folder = data / "reach" / split / str(j)
            folder.mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "Video2Reward/main_ours.py", "--data_path", str(data), "--output_dir", str(out), "--steps", "2",
           "--batch_size", "4", "--backbone", "convnet", "--image_size", "32", "--frames_per_traj", "3",
           "--trajs_per_batch", "2", "--num_workers", "0", "--distributed", "--device", "cuda"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert torch.load(out / "checkpoint_last.pth", weights_only=True)["step"] == 2
