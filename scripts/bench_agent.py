"""Benchmark of the DrQ-v2 / DrM agent update and the replay buffer, as ratios in one run.

- Agent update time (one ``agent.update`` at the given batch size, 84 px, hidden 1024), each
  ``--precision`` side by side (default fp32 and bf16; the encoder's memory format is what
  ``video2reward.precision`` chooses for that precision, channels_last on CPU).
- Replay storage per transition: frames stored once vs the 9-channel stack of DrQ-v2 (stack per
  step, 63.5 KB at 84 px) and vs storing both obs and next_obs stacks (127 KB).
- Replay sampling time at the batch size, with and without the n-step window frames.

    python scripts/bench_agent.py                      # DrQ-v2 and DrM, batch 256
    python scripts/bench_agent.py --agents drqv2 --iters 3 --device cuda
    python scripts/bench_agent.py --threads 1          # steadier when other jobs load the CPU
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from drm.agents import DrQV2Agent
from drm.replay_buffer import ReplayBuffer
from video2reward.precision import add_precision_flag, hardware_summary, resolve_precision


def fill_buffer(size: int, action_dim: int, episodes: int, length: int, seed: int = 0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(episodes * (length + 1), (3, size, size), (action_dim,), frame_stack=3, rng=seed)
    for _ in range(episodes):
        goal = rng.integers(0, 256, (3, size, size), dtype=np.uint8)
        buffer.add_first(rng.integers(0, 256, (3, size, size), dtype=np.uint8), goal_frame=goal)
        for i in range(1, length + 1):
            buffer.add(rng.uniform(-1, 1, action_dim), rng.integers(0, 256, (3, size, size), dtype=np.uint8),
                       float(rng.normal()), False, last=i == length)
    return buffer


def time_updates(agents: dict[str, DrQV2Agent], batch, iters: int, warmup: int,
                 device: torch.device) -> dict[str, float]:
    """Median seconds per ``agent.update`` of each agent. The agents take turns, one update each,
    so that load from other processes hits all of them alike; the first ``warmup`` updates (Adam
    state allocation, oneDNN kernel selection) are not timed."""
    times: dict[str, list[float]] = {name: [] for name in agents}
    for i in range(warmup + iters):
        for name, agent in agents.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            agent.update(batch, step=10_000 + 2 * i)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--hidden-dim", type=int, default=1024)
    parser.add_argument("--action-dim", type=int, default=4)
    parser.add_argument("--nstep", type=int, default=10)
    parser.add_argument("--iters", type=int, default=5, help="timed updates per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates per configuration first")
    parser.add_argument("--agents", nargs="+", default=["drqv2", "drm"], choices=["drqv2", "drm"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_precision_flag(parser, default=["fp32", "bf16"], compare=True)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default); 1 is steadier on a busy CPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size, bs = args.image_size, args.batch_size

    buffer = fill_buffer(size, args.action_dim, episodes=max(3, bs // 50), length=100)
    sample_times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(5):
        for window in (False, True):
            start = time.perf_counter()
            batch = buffer.sample(bs, args.nstep, 0.97, window=window)
            sample_times[window].append(time.perf_counter() - start)
    sample_plain, sample_window = (float(np.median(sample_times[w])) for w in (False, True))
    batch = buffer.sample(bs, args.nstep, 0.97, window=False).to_torch(device)

    print(hardware_summary())
    print(f"device={device} torch={torch.__version__} batch={bs} image={size}px hidden={args.hidden_dim} "
          f"nstep={args.nstep}")
    precisions = {p.label: p for p in (resolve_precision(name, device) for name in args.precision)}
    labels = list(precisions)
    print("\n== agent update (median s/update; CL = channels_last) ==")
    print(f"{'agent':8s}" + "".join(f"{label:>10s}" for label in labels)
          + "".join(f"{f'{labels[0]}/{label}':>20s}" for label in labels[1:]))
    for name in args.agents:
        agents = {}
        for label, p in precisions.items():
            torch.manual_seed(0)
            agents[label] = DrQV2Agent((9, size, size), (args.action_dim,), device, hidden_dim=args.hidden_dim,
                                       use_drm=name == "drm", amp=p.amp, channels_last=p.channels_last,
                                       num_expl_steps=0)
        results = time_updates(agents, batch, args.iters, args.warmup, device)
        print(f"{name:8s}" + "".join(f"{results[label]:10.3f}" for label in labels)
              + "".join(f"{results[labels[0]] / results[label]:19.2f}x" for label in labels[1:]))

    frame_bytes = 3 * size * size
    stack_bytes = 3 * frame_bytes
    ours = buffer.bytes_per_transition
    print("\n== replay storage (bytes / transition) ==")
    print(f"{'frames once (this buffer)':34s} {ours:10.0f}")
    print(f"{'9-ch stack per step (DrQ-v2)':34s} {stack_bytes:10.0f}   {stack_bytes / ours:5.2f}x ours")
    print(f"{'9-ch obs + next_obs stacks':34s} {2 * stack_bytes:10.0f}   {2 * stack_bytes / ours:5.2f}x ours")
    print(f"1M transitions: {ours * 1e6 / 2**30:.1f} GiB here vs {stack_bytes * 1e6 / 2**30:.1f} GiB "
          f"(DrQ-v2 stack) vs {2 * stack_bytes * 1e6 / 2**30:.1f} GiB (obs + next_obs)")
    print("\n== replay sampling (median s / batch) ==")
    print(f"without window frames {sample_plain:.4f}   with window frames (n={args.nstep}) {sample_window:.4f}")


if __name__ == "__main__":
    main()
