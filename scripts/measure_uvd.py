#!/usr/bin/env python
"""Does conditioning a reward model on UVD subgoals help on multi-stage tasks? (docs/baselines.md, UVD)

Rolls the scripted expert on held-out placements of each task, logging which branch of the policy's
``_desired_pos`` chose every action (the expert's own phases: "above the object", "down to it",
"lift", "to the goal", ...), then scores every rollout with each checkpoint twice:

* **final goal**: the reward model's value against the rollout's first and last frames (what a run
  without subgoals sees);
* **subgoals**: ``FrameReward(subgoals=...)`` stepped through the rollout as in RL, its goal rollout
  being the rollout itself: UVD subgoals found with the model's own embedding, each phase scored
  against its subgoal plus the phase offset, advancing by the configured rule.

Printed and written to ``--out/uvd.json``: VOC (Spearman of the value with the frame index) over the
whole rollout and within each expert phase (mean over phases of at least 3 frames), how many phases
the subgoal reward went through, and where the UVD subgoals fall against the expert's phase starts
(mean distance in frames from each expert phase start to the nearest subgoal, and back)::

    python scripts/measure_uvd.py --checkpoints uvd/progressor/checkpoint_last.pth uvd/tcn/checkpoint_last.pth \\
        --tasks pick-place assembly basketball --episodes 5 --out uvd/measure
"""
from __future__ import annotations

import argparse
import ast
import inspect
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

from drm.envs import make_env
from video2reward import load_reward_model
from video2reward.io import atomic_write_json
from video2reward.metrics import spearman
from video2reward.reward_fn import frame_reward
from video2reward.uvd import SubgoalConfig, UVDConfig, decompose

TEST_SEED = 100_000  # placements of the measurement: far from the demo generator's seeds


def branch_lines(policy) -> list[int]:
    """Source line numbers of the ``return`` statements of ``policy._desired_pos``, in order."""
    function = type(policy)._desired_pos
    lines, first = inspect.getsourcelines(function)
    tree = ast.parse(textwrap.dedent("".join(lines)))
    return sorted(first - 1 + node.lineno for node in ast.walk(tree) if isinstance(node, ast.Return))


def expert_rollout(task: str, seed: int, image_size: int, episode_length: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(frames (L, 3, S, S), branch (L,), success)``: the expert's frames and, for frame ``t``, the
    branch of ``_desired_pos`` behind the action that led to it (frame 0: the first action's)."""
    env = make_env(task, seed=seed, image_size=image_size, action_repeat=2, episode_length=episode_length,
                   frame_stack=3, render_quality="fast")
    _, info = env.reset(seed=seed)
    returns = branch_lines(env._policy)
    taken: list[int] = []

    def profile(frame, event, arg):
        if event == "return" and frame.f_code.co_name == "_desired_pos":
            taken.append(returns.index(frame.f_lineno))

    frames, branches, success = [info["frame"]], [], False
    for _ in range(episode_length):
        sys.setprofile(profile)
        try:
            action = env.expert_action()
        finally:
            sys.setprofile(None)
        branches.append(taken[-1])
        *_, info = env.step(action)
        frames.append(info["frame"])
        success |= bool(info["success"])
    env.close()
    return np.stack(frames), np.array([branches[0], *branches]), success


def phase_starts(branch: np.ndarray) -> list[int]:
    """Frames where the expert enters a branch it has not used before (after frame 0)."""
    seen, starts = {int(branch[0])}, []
    for t, b in enumerate(branch):
        if int(b) not in seen:
            seen.add(int(b))
            starts.append(t)
    return starts


def voc_within(values: np.ndarray, starts: list[int]) -> float:
    """Mean VOC over the segments ``[0, s_1), [s_1, s_2), ...`` of at least 3 frames."""
    edges = [0, *starts, len(values)]
    vocs = [spearman(values[a:b], np.arange(b - a)) for a, b in zip(edges[:-1], edges[1:]) if b - a >= 3]
    return float(np.mean(vocs)) if vocs else float("nan")


def nearest(a: list[int], b: list[int]) -> float:
    """Mean distance in frames from each of ``a`` to the nearest of ``b`` (nan if either is empty)."""
    if not a or not b:
        return float("nan")
    return float(np.mean([min(abs(x - y) for y in b) for x in a]))


def score(model, frames: torch.Tensor, subgoals: SubgoalConfig) -> dict:
    """Final-goal and subgoal-conditioned values of one rollout (uint8 ``(L, 3, S, S)``)."""
    final = frame_reward(model, form="value")
    feats = model.encode(frames)
    v_final = final.values(feats[:1], feats, feats[-1:]).cpu().numpy()
    phased = frame_reward(model, form="value", subgoals=subgoals)
    phased.start_episode(frames[0], frames)
    v_sub = [float(phased.subgoals.plan.start_values[0])] + [phased.step(f).reward for f in frames[1:]]
    return {"final": v_final, "subgoals": np.array(v_sub), "num_phases": phased.subgoals.plan.num_phases,
            "last_phase": phased.subgoals.phase}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", nargs="+", required=True)
    p.add_argument("--tasks", nargs="+", default=["pick-place", "assembly", "basketball"])
    p.add_argument("--episodes", type=int, default=5, help="held-out expert rollouts per task")
    p.add_argument("--episode_length", type=int, default=100)
    p.add_argument("--min_gap", type=int, default=UVDConfig().min_gap)
    p.add_argument("--gamma", type=float, default=UVDConfig().gamma)
    p.add_argument("--advance", default="progress")
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    config = SubgoalConfig(UVDConfig(gamma=args.gamma, min_gap=args.min_gap), args.advance, args.threshold)
    models = {Path(c).parent.name or c: load_reward_model(c) for c in args.checkpoints}
    size = {m.image_size for m in models.values()}
    if len(size) != 1:
        raise SystemExit(f"error: the checkpoints take different image sizes {sorted(size)}")
    size = size.pop()
    results = {}
    for task in args.tasks:
        rollouts = [expert_rollout(task, TEST_SEED + i, size, args.episode_length) for i in range(args.episodes)]
        print(f"{task}: {sum(r[2] for r in rollouts)}/{len(rollouts)} expert successes; expert phase starts "
              f"{[phase_starts(r[1]) for r in rollouts]}", flush=True)
        for name, model in models.items():
            rows = []
            for frames, branch, _ in rollouts:
                frames = torch.from_numpy(frames)
                starts = phase_starts(branch)
                s = score(model, frames, config)
                found = decompose(model, frames, config.uvd).subgoals
                t = np.arange(len(frames))
                rows.append({"voc_final": spearman(s["final"], t), "voc_subgoals": spearman(s["subgoals"], t),
                             "phase_voc_final": voc_within(s["final"], starts),
                             "phase_voc_subgoals": voc_within(s["subgoals"], starts),
                             "uvd_subgoals": list(found), "expert_phase_starts": starts,
                             "expert_to_uvd": nearest(starts, list(found[:-1])),
                             "uvd_to_expert": nearest(list(found[:-1]), starts),
                             "phases": s["num_phases"], "phases_reached": s["last_phase"] + 1})
            summary = {k: float(np.nanmean([r[k] for r in rows])) for k in
                       ("voc_final", "voc_subgoals", "phase_voc_final", "phase_voc_subgoals", "expert_to_uvd",
                        "uvd_to_expert", "phases", "phases_reached")}
            results.setdefault(task, {})[name] = {"summary": summary, "rollouts": rows}
            print(f"  {name:12s} VOC final {summary['voc_final']:.3f} subgoals {summary['voc_subgoals']:.3f} | "
                  f"per expert phase final {summary['phase_voc_final']:.3f} subgoals {summary['phase_voc_subgoals']:.3f}"
                  f" | phases {summary['phases']:.1f} reached {summary['phases_reached']:.1f} | expert->uvd "
                  f"{summary['expert_to_uvd']:.1f} uvd->expert {summary['uvd_to_expert']:.1f} frames; subgoals "
                  f"{[r['uvd_subgoals'] for r in rows]}", flush=True)
    atomic_write_json(Path(args.out) / "uvd.json", {"config": {"min_gap": args.min_gap, "gamma": args.gamma,
                                                               "advance": args.advance, "threshold": args.threshold},
                                                    "checkpoints": args.checkpoints, "results": results})


if __name__ == "__main__":
    main()
