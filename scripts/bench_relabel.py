"""Replay sampling + window relabelling with a frozen-encoder reward, per agent step, at a realistic
buffer size (what a state-policy PROGRESSOR run does every step, `preset=state-cpu`).

    python scripts/bench_relabel.py                      # 10k transitions, batch 256, n = 10
    python scripts/bench_relabel.py --transitions 40000 --steps 200

It fills a replay buffer with random 84 px frames in episodes of `--episode_len` steps, builds a
PROGRESSOR reward (random weights: the cost does not depend on them) whose finetuner leaves the encoder
alone (`finetune.params=head`) and changes the head every `--refine_every` steps, warms the
per-frame feature cache up, then times `--steps` agent steps of sample + relabel and prints
milliseconds per step. It uses only interfaces that older checkouts have too, so the same file
times two checkouts side by side (run it with each one's Python).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from drm.replay_buffer import ReplayBuffer
from drm.rewards import relabel
from video2reward import ProgressModel
from video2reward.methods.progressor import ProgressReward


class HeadNudge:
    """An finetuner that changes only the head, as head-only push-back does (the encoder stays)."""

    frozen_features = True

    def __init__(self, model: ProgressModel) -> None:
        self.model = model

    def finetune(self, init, current, goal) -> dict[str, float]:
        with torch.no_grad():
            self.model.fc_mu.bias += 1e-3
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state) -> None:
        pass


def fill(buffer: ReplayBuffer, transitions: int, episode_len: int, rng: np.random.Generator) -> None:
    shape = buffer.frame_shape
    state = np.zeros(39, np.float32)
    while len(buffer) < transitions:
        buffer.add_first(rng.integers(0, 256, shape, dtype=np.uint8), goal_frame=rng.integers(0, 256, shape, dtype=np.uint8),
                         state=state)
        for t in range(episode_len):
            buffer.add(rng.uniform(-1, 1, 4).astype(np.float32), rng.integers(0, 256, shape, dtype=np.uint8), 0.0, False,
                       last=t == episode_len - 1, state=state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transitions", type=int, default=10_000)
    parser.add_argument("--episode_len", type=int, default=250)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--nstep", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100, help="agent steps timed")
    parser.add_argument("--warmup", type=int, default=60, help="agent steps before timing (fill the feature cache)")
    parser.add_argument("--refine_every", type=int, default=10)
    parser.add_argument("--backbone", default="convnet_spatial")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = ProgressModel(args.backbone, image_size=84).eval()
    reward = ProgressReward(model, finetuner=HeadNudge(model))
    buffer = ReplayBuffer(args.transitions + 2 * (args.episode_len + 1), (3, 84, 84), (4,), rng=0,
                          state_shape=(39,))  # the agent sees states, as in obs_type=state
    fill(buffer, args.transitions, args.episode_len, rng)
    spent = {"sample": 0.0, "relabel": 0.0}
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            spent = {"sample": 0.0, "relabel": 0.0}
        if i % args.refine_every == 0:
            reward.finetune(None, None, None)
        t0 = time.perf_counter()
        batch = buffer.sample(args.batch_size, args.nstep, 0.99).to_torch("cpu")
        t1 = time.perf_counter()
        relabel(batch, reward)
        t2 = time.perf_counter()
        spent["sample"] += t1 - t0
        spent["relabel"] += t2 - t1
    ms = {k: 1000 * v / args.steps for k, v in spent.items()}
    print(f"{args.transitions} transitions, batch {args.batch_size}, n {args.nstep}, head change every "
          f"{args.refine_every} steps, {args.backbone}, {args.threads} thread(s): ms per agent step: sample "
          f"{ms['sample']:.1f}, relabel {ms['relabel']:.1f}, total {ms['sample'] + ms['relabel']:.1f}")


if __name__ == "__main__":
    main()
