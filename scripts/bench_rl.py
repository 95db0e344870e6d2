"""Where an RL agent step's time goes, measured in one run for each precision (default fp32 and bf16).

    python scripts/bench_rl.py                       # drawer-open, 84 px, batch 256, convnet reward
    python scripts/bench_rl.py --backbone resnet18_84 --steps 300
    python scripts/bench_rl.py --task toy-reach --image_size 32 --batch_size 128 --nstep 3 --precision fp32
    python scripts/bench_rl.py --obs_type state --precision fp32 --extra agent.hidden_dim=256

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
from video2reward.precision import add_precision_flag, hardware_summary, resolve_precision  # noqa: E402

PHASES = ("env", "reward", "sample", "relabel", "update", "refine", "act")


def run(args: argparse.Namespace, precision: str, tmp: Path) -> dict[str, float]:
    overrides = [
        f"task={args.task}", f"agent={args.agent}", f"precision={precision}", f"batch_size={args.batch_size}",
        f"num_seed_frames={2 * args.seed_steps}", f"agent.num_expl_steps={args.seed_steps}",
        f"num_train_frames={2 * (args.seed_steps + args.steps)}", "eval_every_frames=100000000",
        "num_eval_episodes=0", "save_snapshot=false", "save_video=false", f"log_every_frames={2 * args.seed_steps}",
        f"reward.checkpoint={tmp / 'reward.pth'}", f"exp_data_path={tmp / 'demos'}", "demos.num_train=2",
        "demos.num_test=0", "demos.keep_failures=true", f"nstep={args.nstep}", f"reward.relabel={args.relabel}",
        f"image_size={args.image_size}", f"num_threads={args.threads}", f"obs_type={args.obs_type}", *args.extra,
    ]
    with initialize_config_dir(config_dir=str(drm.DRM_ROOT / "cfgs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    run_dir = tmp / f"run_{precision}"
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
    parser.add_argument("--image_size", type=int, default=84)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the run (default 1)")
    parser.add_argument("--obs_type", default="pixels", choices=("pixels", "state"), help="what the agent sees")
    parser.add_argument("--extra", nargs="*", default=[], help="more train_mw.py overrides, e.g. agent.hidden_dim=256")
    add_precision_flag(parser, default=["fp32", "bf16"], compare=True)
    args = parser.parse_args()
    labels = {name: resolve_precision(name).label for name in args.precision}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        save_reward_model(ProgressModel(args.backbone, image_size=args.image_size), tmp / "reward.pth")
        results = {name: run(args, name, tmp) for name in args.precision}
    print(f"\n{hardware_summary(args.threads)}")
    print(f"{args.task}, {args.agent} on {args.obs_type} {' '.join(args.extra)}, reward {args.backbone} at "
          f"{args.image_size}px, batch {args.batch_size}, nstep {args.nstep}, relabel {args.relabel}: seconds per agent step after the seed phase (CL = channels_last)")
    first = args.precision[0]
    print(f"{'phase':<10}" + "".join(f"{labels[n]:>10}" for n in args.precision)
          + "".join(f"{f'{labels[first]}/{labels[n]}':>18}" for n in args.precision[1:]))
    totals = {n: sum(results[n][p] for p in PHASES) for n in args.precision}
    for p in (*PHASES, "total"):
        row = {n: (totals[n] if p == "total" else results[n][p]) for n in args.precision}
        print(f"{p:<10}" + "".join(f"{row[n]:>10.4f}" for n in args.precision)
              + "".join(f"{row[first] / row[n] if row[n] > 0 else float('nan'):>17.2f}x" for n in args.precision[1:]))
    bpt = results[first]["bytes_per_transition"]
    stack = 9 * args.image_size ** 2
    print(f"\nreplay: {bpt:.0f} bytes/transition vs {stack} for DrQ-v2's 9-channel "
          f"stack ({stack / bpt:.1f}x less; {2 * stack / bpt:.1f}x if obs and next_obs are both stored)")


if __name__ == "__main__":
    main()
