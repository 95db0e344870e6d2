"""Where an RL agent step's time goes, measured in one run with bf16+channels_last on and off.

    python scripts/bench_rl.py                       # drawer-open, 84 px, batch 256, convnet reward
    python scripts/bench_rl.py --backbone resnet18_84 --steps 300

For each precision it runs the real workspace (seed phase, then updates every 2 steps, push-back
refinement every 100 steps) and prints the seconds per agent step spent in env stepping + rendering,
reward inference, replay sampling, reward relabelling, the agent update and refinement, plus replay
bytes per transition next to DrQ-v2's stored 9-channel stack. The reward model has random weights
(the cost does not depend on them); a few expert demos are generated into a temporary folder.
"""
from __future__ import annotations

import argparse
import csv
import os
import tempfile
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from hydra import compose, initialize_config_dir  # noqa: E402

import drm  # noqa: E402
from drm.workspace import Workspace  # noqa: E402
from video2reward import ProgressModel, save_reward_model  # noqa: E402

PHASES = ("env", "reward", "sample", "relabel", "update", "refine", "act")


def run(args: argparse.Namespace, amp: bool, tmp: Path) -> dict[str, float]:
    overrides = [
        f"task={args.task}", f"agent={args.agent}", f"amp={str(amp).lower()}", f"batch_size={args.batch_size}",
        f"num_seed_frames={2 * args.seed_steps}", f"agent.num_expl_steps={args.seed_steps}",
        f"num_train_frames={2 * (args.seed_steps + args.steps)}", "eval_every_frames=100000000",
        "num_eval_episodes=0", "save_snapshot=false", "save_video=false", f"log_every_frames={2 * args.seed_steps}",
        f"reward.checkpoint={tmp / 'reward.pth'}", f"exp_data_path={tmp / 'demos'}", "demos.num_train=2",
        "demos.num_test=0", "demos.keep_failures=true", f"nstep={args.nstep}", f"reward.relabel={args.relabel}",
    ]
    with initialize_config_dir(config_dir=str(drm.DRM_ROOT / "cfgs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    run_dir = tmp / f"run_amp{int(amp)}"
    workspace = Workspace(cfg, run_dir)
    workspace.train()
    with open(run_dir / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    last = rows[-1]  # the row covering the post-seed steps only
    steps = float(last["step"]) - float(rows[-2]["step"]) if len(rows) > 1 else float(last["step"])
    out = {p: float(last.get(f"time_{p}") or 0.0) / steps for p in PHASES}
    out["bytes_per_transition"] = workspace.replay.bytes_per_transition
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="drawer-open")
    parser.add_argument("--agent", default="drqv2")
    parser.add_argument("--backbone", default="convnet")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200, help="agent steps measured after the seed phase")
    parser.add_argument("--seed_steps", type=int, default=100)
    parser.add_argument("--nstep", type=int, default=3)
    parser.add_argument("--relabel", default="window")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        save_reward_model(ProgressModel(args.backbone, image_size=84), tmp / "reward.pth")
        results = {amp: run(args, amp, tmp) for amp in (False, True)}
    fp32, bf16 = results[False], results[True]
    print(f"\n{args.task}, {args.agent}, reward {args.backbone}, batch {args.batch_size}, nstep {args.nstep}, "
          f"relabel {args.relabel}: seconds per agent step after the seed phase")
    print(f"{'phase':<10}{'fp32':>10}{'bf16+CL':>10}{'speed-up':>10}")
    for p in PHASES:
        ratio = fp32[p] / bf16[p] if bf16[p] > 0 else float("nan")
        print(f"{p:<10}{fp32[p]:>10.4f}{bf16[p]:>10.4f}{ratio:>9.2f}x")
    tot32, tot16 = sum(fp32[p] for p in PHASES), sum(bf16[p] for p in PHASES)
    print(f"{'total':<10}{tot32:>10.4f}{tot16:>10.4f}{tot32 / tot16:>9.2f}x")
    stack = 9 * 84 * 84
    print(f"\nreplay: {fp32['bytes_per_transition']:.0f} bytes/transition vs {stack} for DrQ-v2's 9-channel "
          f"stack ({stack / fp32['bytes_per_transition']:.1f}x less; {2 * stack / fp32['bytes_per_transition']:.1f}x "
          f"if obs and next_obs are both stored)")


if __name__ == "__main__":
    main()
