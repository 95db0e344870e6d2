"""Reward-model training throughput: per-triplet vs shared-embedding batches, fp32 vs bf16.

    python scripts/bench_reward_training.py [--backbone convnet] [--image_size 84] [--batch_size 256]
    python scripts/bench_reward_training.py --precision fp32 auto    # what a run picks here vs fp32

Every variant runs the real training step (sampling, augmentation, forward, backward, AdamW) on
the same synthetic trajectories; steps of the variants are interleaved so that load from other
processes hits them alike. Prints triplets/s, frames encoded per step and ratios to the
per-triplet fp32 baseline.
"""
from __future__ import annotations

import argparse
import time

import torch

from video2reward.data import VideoDataset
from video2reward.methods.progressor import ProgressModel
from video2reward.precision import add_precision_flag, hardware_summary, resolve_precision
from video2reward.steps import method_parts, prepare_batch
from video2reward.train import TrainConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="convnet")
    p.add_argument("--image_size", type=int, default=84)
    p.add_argument("--batch_size", type=int, default=256, help="triplets per step")
    p.add_argument("--frames_per_traj", type=int, default=16)
    p.add_argument("--trajs_per_batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant (after one warm-up step)")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="time without augmentation")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    add_precision_flag(p, default=["fp32", "bf16"], compare=True)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    s = args.image_size
    trajs = [torch.randint(0, 256, (101, 3, s, s), dtype=torch.uint8, generator=g) for _ in range(24)]
    dataset = VideoDataset.from_trajectories(trajs, [f"task{i % 6}" for i in range(24)])
    device = torch.device(args.device)

    precisions = {q.label: q for q in (resolve_precision(name, device) for name in args.precision)}
    variants = {}
    for shared in (False, True):
        for label, precision in precisions.items():
            cfg = TrainConfig(data_path="synthetic", backbone=args.backbone, image_size=s, batch_size=args.batch_size,
                              shared_embedding=shared, precision=precision.name, augment=args.augment,
                              frames_per_traj=args.frames_per_traj, trajs_per_batch=args.trajs_per_batch)
            torch.manual_seed(0)
            model = ProgressModel(args.backbone, s, amp=precision.amp, channels_last=precision.channels_last).to(device)
            parts = method_parts(cfg, model, dataset)
            name = f"{'shared-embedding' if shared else 'per-triplet':<16} {label:<7}"
            variants[name] = dict(cfg=cfg, parts=parts, amp=precision.amp,
                                  optimizer=torch.optim.AdamW(model.parameters(), lr=1e-4), times=[], frames=0)

    for step in range(args.steps + 1):
        for v in variants.values():
            t0 = time.perf_counter()
            batch = prepare_batch(v["parts"].sampler, step, 0, v["cfg"], s)
            v["parts"].step(v["parts"].objective, v["optimizer"], batch, device, v["amp"], v["cfg"].grad_clip)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step > 0:  # the first step warms up allocators and kernels
                v["times"].append(time.perf_counter() - t0)
            v["frames"] = batch.flat_frames.shape[0]

    print(hardware_summary())
    print(f"backbone {args.backbone} @ {s}px, {args.batch_size} triplets/step, augment={args.augment}, "
          f"median of {args.steps} steps; CL = channels_last")
    print(f"{'variant':<25} {'s/step':>8} {'triplets/s':>11} {'frames/step':>12} {'vs per-triplet fp32':>20}")
    base = None
    for name, v in variants.items():
        t = sorted(v["times"])[len(v["times"]) // 2]
        rate = args.batch_size / t
        base = base or rate
        print(f"{name:<25} {t:>8.3f} {rate:>11.1f} {v['frames']:>12d} {rate / base:>19.2f}x")
    names = list(variants)
    med = {n: sorted(variants[n]["times"])[len(variants[n]["times"]) // 2] for n in names}
    k = len(precisions)
    labels = list(precisions)
    for j in range(1, k):
        print(f"{labels[j]} vs {labels[0]}: per-triplet {med[names[0]] / med[names[j]]:.2f}x, "
              f"shared {med[names[k]] / med[names[k + j]]:.2f}x")
    print("shared-embedding speed-up: " + ", ".join(f"{labels[j]} {med[names[j]] / med[names[k + j]]:.2f}x"
                                                   for j in range(k)))


if __name__ == "__main__":
    main()
