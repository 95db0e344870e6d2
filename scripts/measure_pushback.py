#!/usr/bin/env python
"""How fast does push-back correct a reward model that overrates states no expert visits?

Builds "parked arm" agent frames of a Meta-World task (a few random actions, then one constant
action with every coordinate at +-1 for the rest of the episode: the arm ends at a corner of its
workspace, the behaviour a state policy converged to in docs/rl.md), scores them with a pretrained
PROGRESSOR checkpoint, then runs push-back refinement on them with each setting given and prints
the parked frames' mean mu / sigma and the held-out expert demos' mean mu at 0, 25, 50, 75 and 100 %
of the episode, every ``--every`` steps:

    python scripts/measure_pushback.py --checkpoint runs/rm3/checkpoint_last.pth --demos runs/rl_state_demos \\
        --task drawer-open --settings all:0.01 all:0.1 head:0.1 head:1.0 --steps 400

A setting is ``params:weight`` (``finetune.params`` and ``finetune.pushback_weight``); the other
refinement settings are the defaults of ``drm.schema.FinetuneConfig``.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch

from drm.envs import make_env
from video2reward import load_reward_model
from video2reward.data import load_dataset
from video2reward.methods.pushback import PushBackFinetuner, PushBackConfig


def parked_frames(task: str, episodes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(init, current, goal) uint8 frames of episodes that park the arm at a workspace corner: the
    second half of each 100-step episode, every 5th step."""
    env = make_env(task, seed=seed, image_size=84, action_repeat=2, episode_length=100, frame_stack=3,
                   render_quality="fast", obs_type="state")
    rng = np.random.default_rng(seed)
    corners = list(itertools.product([-1.0, 1.0], repeat=4))
    init, cur, goal = [], [], []
    for k in range(episodes):
        _, info = env.reset(seed=seed + k)
        start = info["frame"]
        end, _ = env.goal_frame()
        env.reset(seed=seed + k)
        corner = np.asarray(corners[k % len(corners)], np.float32)
        for t in range(100):
            action = corner if t >= 10 else rng.uniform(-1, 1, 4).astype(np.float32)
            _, _, _, _, info = env.step(action)
            if t >= 50 and t % 5 == 4:
                init.append(start)
                cur.append(info["frame"])
                goal.append(end)
    return tuple(torch.from_numpy(np.stack(x)) for x in (init, cur, goal))


def expert_profile(model, test) -> np.ndarray:
    """Mean mu of the held-out demos at 0, 25, 50, 75 and 100 % of each episode."""
    rows = []
    for i in range(len(test)):
        f = model.encode(test.trajectory(i))
        mu = model.predict_from_features(f[:1], f, f[-1:]).loc.float().numpy()
        rows.append(mu[np.round(np.linspace(0, len(mu) - 1, 5)).astype(int)])
    return np.mean(rows, 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a PROGRESSOR reward checkpoint")
    p.add_argument("--demos", required=True, help="demo folder (<task>/{train,test}/<traj>/<i>.png)")
    p.add_argument("--task", default="drawer-open")
    p.add_argument("--settings", nargs="+", default=["all:0.01", "head:0.1"], help="params:weight ...")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--every", type=int, default=100, help="print every this many steps")
    p.add_argument("--episodes", type=int, default=16, help="parked-arm episodes (10 frames each)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for path in (Path(args.checkpoint), Path(args.demos) / args.task):
        if not path.exists():
            sys.exit(f"error: {path} does not exist")
    settings = []
    for s in args.settings:
        params, _, weight = s.partition(":")
        try:
            settings.append((params, float(weight)))
            PushBackConfig(params=params)
        except ValueError:
            sys.exit(f"error: setting {s!r} is not params:weight with params all or head")
    init, cur, goal = parked_frames(args.task, args.episodes, args.seed)
    train = load_dataset(args.demos, split="train", image_size=84, tasks=[args.task])
    test = load_dataset(args.demos, split="test", image_size=84, tasks=[args.task])
    print(f"{len(cur)} parked-arm frames of {args.task}; {len(train)} train / {len(test)} held-out demos")
    for params, weight in settings:
        model = load_reward_model(args.checkpoint)
        finetuner = PushBackFinetuner(model, train, PushBackConfig(pushback_weight=weight, params=params),
                                  amp=model.amp, seed=args.seed)
        draw = torch.Generator().manual_seed(args.seed)
        start = time.perf_counter()
        for step in range(args.steps + 1):
            if step % args.every == 0:
                with torch.no_grad():
                    d = model.predict(init, cur, goal)
                per_step = (time.perf_counter() - start) / max(step, 1)
                print(f"params={params} weight={weight} step {step:4d}: parked mu {float(d.loc.mean()):.3f} "
                      f"sigma {float(d.scale.mean()):.3f} | expert mu at 0/25/50/75/100 % "
                      f"{np.array2string(expert_profile(model, test), precision=2)}"
                      + (f" | {per_step:.3f} s/step" if step else ""), flush=True)
            if step < args.steps:
                idx = torch.randint(len(cur), (finetuner.config.replay_batch_size,), generator=draw)
                finetuner.finetune(init[idx], cur[idx], goal[idx])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
