"""Milliseconds per agent step of the real training loop, side by side for the env, sparse and PROGRESSOR
rewards, with the replay buffer at 10k and at 100k transitions, in one run and one thread.

    python scripts/bench_loop.py                                   # plate-slide, preset=state-cpu
    python scripts/bench_loop.py --extra reward.refresh_budget=0   # PROGRESSOR's exact window relabelling
    python scripts/bench_loop.py --buffers 10000 --rewards ours --steps 600

For every (reward, buffer size) it builds the workspace `train_mw.py` would (`--extra` overrides on
top of `preset=state-cpu`), fills its replay buffer with `N` transitions in 100-step episodes, puts
the run's counters at step `N` (past the seed phase and the exploration decay), and for PROGRESSOR
fills the reward's tables as a long run has them by then: every replay frame's features (the encoder
is frozen, `finetune.params=head`), its episode's init / goal features and a value from the current
head (random unit features: the cost does not depend on them; the model has random weights). It then
trains `--steps` agent steps (push-back on as in the preset), drops the first episode as warm-up and
prints each phase's ms per agent step from `train.csv`'s `time_*` columns, the totals, the ratios the
issue asks for (ours / env at the largest buffer, ours at the largest / the smallest buffer), and the
time of one rendered 84 px frame, with the CPU class. Expert demos for push-back are generated into a
temporary folder (a few seconds).
"""
from __future__ import annotations

import argparse
import csv
import gc
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

import drm  # noqa: E402
from drm.envs import make_env  # noqa: E402
from drm.workspace import Workspace  # noqa: E402
from video2reward import ProgressModel, save_reward_model  # noqa: E402
from video2reward.model import FEATURE_DIM  # noqa: E402
from video2reward.precision import hardware_summary  # noqa: E402

PHASES = ("env", "reward", "sample", "relabel", "update", "refine", "act")
EPISODE = 100  # agent steps per episode (the config's episode_length)


def fill_replay(workspace: Workspace, transitions: int, rng: np.random.Generator) -> None:
    """``transitions`` steps in full episodes, one fixed frame (the gather cost does not depend on it)."""
    replay = workspace.replay
    shape = replay.frame_shape
    frame = rng.integers(0, 256, shape, dtype=np.uint8)
    state = np.zeros(workspace.train_env.observation_space.shape, np.float32)
    action = np.zeros(workspace.train_env.action_space.shape, np.float32)
    for _ in range(transitions // EPISODE):
        replay.add_first(frame, goal_frame=frame, state=state)
        for t in range(EPISODE):
            replay.add(action, frame, 0.0, False, last=t == EPISODE - 1, state=state)
    workspace.global_step = transitions
    workspace.global_episode = transitions // EPISODE


def fill_reward_tables(workspace: Workspace, transitions: int) -> None:
    """What a run's frozen-encoder PROGRESSOR reward keeps by step ``transitions``."""
    reward = workspace.reward
    if not getattr(reward, "keeps_features", False):
        return
    episodes = transitions // EPISODE
    dim = FEATURE_DIM
    ep_keys = torch.arange(episodes).repeat_interleave(EPISODE + 1)
    step_keys = torch.arange(EPISODE + 1).repeat(episodes)
    feats = F.normalize(torch.randn(len(ep_keys), dim), dim=-1)
    reward._frame_features.put(ep_keys, step_keys, feats)
    for e in range(episodes):
        reward._episode_features[e] = F.normalize(torch.randn(2, dim), dim=-1)
    for lo in range(0, len(ep_keys), 65536):  # one value per frame from the current head
        sl = slice(lo, lo + 65536)
        pairs = reward._endpoint_features(ep_keys[sl].tolist(), None)
        reward._put_values(ep_keys[sl], step_keys[sl], reward.values(pairs[:, 0], feats[sl], pairs[:, 1]).float())


def run(args: argparse.Namespace, reward_model: str, transitions: int, tmp: Path) -> dict[str, float]:
    steps = max(args.steps // EPISODE, 2) * EPISODE
    overrides = [
        f"task={args.task}", "preset=state-cpu", f"reward_model={reward_model}", f"num_threads={args.threads}",
        f"num_train_frames={2 * (transitions + steps)}", "eval_every_frames=100000000", "num_eval_episodes=0",
        "save_snapshot=false", "save_video=false", f"log_every_frames={2 * EPISODE}",
        f"reward.checkpoint={tmp / 'reward.pth'}", f"exp_data_path={tmp / 'demos'}", "demos.num_train=2",
        "demos.num_test=0", "demos.keep_failures=true", f"replay_buffer_size={transitions + steps + 1000}",
        *args.extra,
    ]
    with initialize_config_dir(config_dir=str(drm.DRM_ROOT / "cfgs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    run_dir = tmp / f"run_{reward_model}_{transitions}"
    workspace = Workspace(cfg, run_dir)
    fill_replay(workspace, transitions, np.random.default_rng(0))
    fill_reward_tables(workspace, transitions)
    workspace.train()
    with open(run_dir / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    n = float(rows[-1]["step"]) - float(rows[0]["step"])  # agent steps after the first episode (warm-up)
    rows = rows[1:]
    out = {p: 1000 * sum(float(r.get(f"time_{p}") or 0.0) for r in rows) / n for p in PHASES}
    out["total"] = sum(out[p] for p in PHASES)
    del workspace
    gc.collect()
    return out


def render_ms(task: str, frames: int = 200) -> float:
    env = make_env(task, seed=0, obs_type="state")
    env.reset(seed=0)
    env.step(np.zeros(4, np.float32))
    env._render_rgb()
    start = time.perf_counter()
    for _ in range(frames):
        env._render_rgb()
    ms = 1000 * (time.perf_counter() - start) / frames
    env.close()
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="plate-slide")
    parser.add_argument("--rewards", nargs="+", default=["env", "sparse", "ours"])
    parser.add_argument("--buffers", nargs="+", type=int, default=[10_000, 100_000], help="replay transitions")
    parser.add_argument("--steps", type=int, default=400, help="agent steps per cell (whole episodes; the first is warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backbone", default="convnet_spatial", help="the reward model's (random weights)")
    parser.add_argument("--extra", nargs="*", default=[], help="more train_mw.py overrides, the same for every cell")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        save_reward_model(ProgressModel(args.backbone, image_size=84, head="distance"), tmp / "reward.pth")
        for transitions in args.buffers:
            for reward_model in args.rewards:
                results[reward_model, transitions] = run(args, reward_model, transitions, tmp)
                print(f"{reward_model} at {transitions} transitions: {results[reward_model, transitions]['total']:.1f} "
                      f"ms per agent step", flush=True)
    frame_ms = render_ms(args.task)
    print(f"\n{hardware_summary(args.threads)}")
    print(f"{args.task}, preset=state-cpu {' '.join(args.extra)}: ms per agent step after warm-up")
    cells = [(r, n) for n in args.buffers for r in args.rewards]
    print(f"{'phase':<9}" + "".join(f"{f'{r}@{n // 1000}k':>12}" for r, n in cells))
    for p in (*PHASES, "total"):
        print(f"{p:<9}" + "".join(f"{results[c][p]:>12.1f}" for c in cells))
    big, small = max(args.buffers), min(args.buffers)
    if "ours" in args.rewards:
        for base in ("env", "sparse"):
            if base in args.rewards:
                print(f"ours / {base} at {big // 1000}k: {results['ours', big]['total'] / results[base, big]['total']:.2f}x")
        if big != small:
            print(f"ours at {big // 1000}k / ours at {small // 1000}k: "
                  f"{results['ours', big]['total'] / results['ours', small]['total']:.2f}x")
    print(f"one {args.task} frame rendered (84 px, render_quality=fast): {frame_ms:.1f} ms")


if __name__ == "__main__":
    main()
