"""Getting a reward model and expert demos for a run, loudly.

Resolution order for ``reward_model=ours``:

1. ``reward.checkpoint`` exists -> load it (our format or either released format).
2. otherwise pretrain one on the demos in ``exp_data_path`` (the ``pretrain`` config section),
   generating any missing demos first with the scripted experts, and save it at
   ``reward.checkpoint`` so the next run loads it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig

from video2reward import ProgressModel, load_reward_model
from video2reward.precision import Precision
from video2reward.data import VideoDataset, load_dataset

from .demos import DemoSettings, check_demo_settings, generate_demos


def banner(message: str) -> None:
    line = "=" * min(100, max(len(message), 40))
    print(f"\n{line}\n{message}\n{line}", flush=True)


def _has_demos(root: Path, task: str) -> bool:
    return (root / task / "train").is_dir() and any((root / task / "train").iterdir())


def ensure_demos(cfg: DictConfig, tasks: list[str]) -> Path:
    """Generate scripted-expert demos for the ``tasks`` missing from ``exp_data_path``."""
    root = Path(cfg.exp_data_path)
    d = cfg.demos
    settings = DemoSettings(seed=d.seed, keep_failures=d.keep_failures, image_size=cfg.image_size,
                            render_quality=cfg.render_quality, episode_length=cfg.episode_length,
                            action_repeat=cfg.action_repeat)
    tasks = list(dict.fromkeys(tasks))
    missing = [t for t in tasks if not _has_demos(root, t)]
    for task in tasks:
        if task not in missing:  # demos from another episode length or renderer would mislead the reward
            check_demo_settings(root / task, settings)
    if missing:
        banner(f"expert demos for {missing} not found in {root}: generating {d.num_train} train + "
               f"{d.num_test} test trajectories per task with the scripted experts")
        generate_demos(root, tasks=missing, num_train=d.num_train, num_test=d.num_test, settings=settings)
    return root


def load_expert_demos(cfg: DictConfig, image_size: int) -> VideoDataset:
    """The run task's training demos, decoded once into the frame cache."""
    root = ensure_demos(cfg, [cfg.task_name])  # also refuses demos made with another render_quality etc.
    return load_dataset(root, split="train", image_size=image_size, tasks=[cfg.task_name])


def resolve_reward_model(cfg: DictConfig, device: torch.device, precision: Precision) -> ProgressModel:
    source = str(cfg.reward.checkpoint)
    path = Path(source)
    if not source.startswith("hf://") and not path.exists():
        banner(f"reward checkpoint {path} not found: pretraining one from expert demos in {cfg.exp_data_path} "
               f"(backbone {cfg.pretrain.backbone}, {cfg.pretrain.steps} steps). To use the released weights "
               f"instead: python scripts/download_pretrained.py")
        pretrain_reward_model(cfg, path, precision)
    model = load_reward_model(source, device=device, alpha=cfg.reward.alpha, amp=precision.amp,
                              channels_last=precision.channels_last)
    print(f"reward model: {model.config.backbone} at {model.image_size}px from {source}", flush=True)
    return model


def pretrain_reward_model(cfg: DictConfig, path: Path, precision: Precision) -> Path:
    """Multi-task pretraining on ``pretrain.tasks`` + the run's task; the result is saved at ``path``."""
    from video2reward.train import TrainConfig, pretrain

    p = cfg.pretrain
    tasks = list(dict.fromkeys([*p.tasks, cfg.task_name]))
    root = ensure_demos(cfg, tasks)
    out_dir = path.parent / f"{path.stem}_pretrain"
    checkpoint = pretrain(TrainConfig(
        data_path=str(root), output_dir=str(out_dir), tasks=tasks, backbone=p.backbone, image_size=p.image_size,
        steps=p.steps, batch_size=p.batch_size, lr=p.lr, label_std=p.label_std, shift_pixels=p.shift_pixels,
        rank_weight=p.get("rank_weight"), head=p.head,
        seed=p.seed, precision=precision.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    shutil.copyfile(checkpoint, tmp)
    tmp.replace(path)
    banner(f"pretrained reward model saved to {path} (training outputs and eval plots in {out_dir})")
    return path
