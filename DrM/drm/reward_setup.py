"""The run's reward (:func:`build_reward`, the one place that reads ``reward_model``), and getting a
reward model and expert demos for it, loudly.

Resolution order for ``reward_model=ours``:

1. ``reward.checkpoint`` exists -> load it (our format or either released format). When it is the
   config files' default (not given on the command line) and was pretrained here, its recorded
   provenance must match this run's ``pretrain`` / ``demos`` settings; otherwise the run says which
   settings differ and pretrains a new one in its place.
2. it does not exist: given on the command line -> an error (a typo must not start an hour of
   pretraining); the config default -> pretrain one on the demos in ``exp_data_path`` (the
   ``pretrain`` config section), generating or topping up demos first with the scripted experts,
   and save it at ``reward.checkpoint`` so the next run loads it (a stopped pretraining continues
   when the run is repeated with the same settings). ``reward.pretrain_if_missing`` (true / false)
   overrides this choice.
"""
from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from video2reward import load_reward_model
from video2reward.checkpoint import CheckpointError, read_checkpoint, read_provenance
from video2reward.data import VideoDataset, load_dataset
from video2reward.io import atomic_torch_save
from video2reward.methods import METHODS, PRETRAINABLE, OnlineFinetuner, RewardModel, build_model
from video2reward.methods.pushback import saved_optimizer_state
from video2reward.precision import Precision
from video2reward.reward_fn import EnvReward, RewardFunction, SparseReward, frame_reward
from video2reward.uvd import SubgoalConfig, UVDConfig

from .rewards import reward_method

ONLINE_ONLY = tuple(m for m in METHODS if m not in PRETRAINABLE)  # gail: nothing to pretrain

from .demos import DemoSettings, check_demo_settings, generate_demos, read_metadata


class RewardSetupError(ValueError):
    """The reward model of a run cannot be had as configured; the message says why and what to do."""


def banner(message: str) -> None:
    line = "=" * min(100, max(len(message), 40))
    print(f"\n{line}\n{message}\n{line}", flush=True)


def _count(split_dir: Path) -> int:
    return sum(1 for e in split_dir.iterdir() if e.name.isdigit()) if split_dir.is_dir() else 0


def ensure_demos(cfg: DictConfig, tasks: list[str]) -> Path:
    """Generate scripted-expert demos for the ``tasks`` that lack them in ``exp_data_path``, and top
    up generated ones holding fewer than ``demos.num_train`` / ``demos.num_test`` trajectories."""
    root = Path(cfg.exp_data_path)
    d = cfg.demos
    settings = DemoSettings.from_config(cfg)
    tasks = list(dict.fromkeys(tasks))
    # a folder without our metadata.json (e.g. the released dataset) is used as it is, never topped up
    short = [t for t in tasks if _count(root / t / "train") == 0 or (read_metadata(root / t) is not None and (
        _count(root / t / "train") < d.num_train or _count(root / t / "test") < d.num_test))]
    for task in tasks:
        if (root / task).is_dir():  # demos from another episode length or renderer would mislead the reward
            check_demo_settings(root / task, settings)
    if short:
        banner(f"expert demos for {short} missing or fewer than {d.num_train} train + {d.num_test} test "
               f"trajectories in {root}: generating the missing ones with the scripted experts")
        generate_demos(root, tasks=short, num_train=d.num_train, num_test=d.num_test, settings=settings)
    return root


def load_expert_demos(cfg: DictConfig, image_size: int) -> VideoDataset:
    """The run task's training demos, decoded once into the frame cache."""
    root = ensure_demos(cfg, [cfg.task_name])  # also refuses demos made with another render_quality etc.
    return load_dataset(root, split="train", image_size=image_size, tasks=[cfg.task_name])


def pretrain_request(cfg: DictConfig) -> dict[str, Any]:
    """What this run asks of an auto-pretrained reward model: recorded in its provenance, compared
    before the default checkpoint is reused."""
    p, d = cfg.pretrain, cfg.demos
    return {"tasks": sorted(set(p.tasks) | {cfg.task_name}), "image_size": int(p.image_size),
            "backbone": str(p.backbone), "head": str(p.head), "steps": int(p.steps), "batch_size": int(p.batch_size),
            "lr": float(p.lr), "label_std": str(p.label_std), "shift_pixels": int(p.shift_pixels),
            "rank_weight": None if p.get("rank_weight") is None else float(p.rank_weight), "seed": int(p.seed),
            "demos_train": int(d.num_train), "demos_test": int(d.num_test), "demos_seed": int(d.seed),
            "render_quality": str(cfg.render_quality), "episode_length": int(cfg.episode_length),
            "action_repeat": int(cfg.action_repeat),
            **({} if cfg.reward_model == "ours" else {"method": reward_method(cfg.reward_model)})}


def _mismatch(path: Path, cfg: DictConfig) -> str | None:
    """Why the default checkpoint at ``path`` does not fit this run (``None``: it fits, or it records
    no DrM request, e.g. the released weights, which are used as they are)."""
    recorded = (read_provenance(path) or {}).get("drm_request")
    if recorded is None:
        return None
    wanted = pretrain_request(cfg)
    diffs = [f"{k} {recorded.get(k)!r} -> {wanted[k]!r}" for k in wanted if recorded.get(k) != wanted[k]]
    return ", ".join(diffs) or None


def _describe(path: Path) -> str:
    origin = read_provenance(path)
    if not origin:
        return "no provenance recorded"
    voc = origin.get("heldout_voc")
    return (f"pretrained {origin.get('steps')} steps on {', '.join(origin.get('tasks', []))} "
            f"({sum(c.get('train', 0) for c in origin.get('trajectories', {}).values())} train trajectories)"
            + (f", held-out VOC {voc:.3f}" if isinstance(voc, float) else ""))


def resolve_reward_model(cfg: DictConfig, device: torch.device, precision: Precision,
                         checkpoint_given: bool = False) -> RewardModel:
    """The run's reward model (module docstring). ``checkpoint_given``: ``reward.checkpoint`` came
    from the command line rather than the config files."""
    source = checkpoint_source(cfg, checkpoint_given)
    path = Path(source).expanduser()
    local = not source.startswith("hf://")
    may_pretrain = cfg.reward.get("pretrain_if_missing")
    may_pretrain = (not checkpoint_given) if may_pretrain is None else bool(may_pretrain)
    if local and not path.exists():
        if not may_pretrain:
            raise RewardSetupError(f"reward.checkpoint {path} does not exist (given on the command line, so it "
                                   f"is not pretrained; drop it to use the default, or add "
                                   f"reward.pretrain_if_missing=true to pretrain one there)")
        banner(f"reward checkpoint {path} not found: pretraining one from expert demos in {cfg.exp_data_path} "
               f"(backbone {cfg.pretrain.backbone}, {cfg.pretrain.steps} steps). To use the released weights "
               f"instead: python scripts/download_pretrained.py")
        pretrain_reward_model(cfg, path, precision)
    elif local and may_pretrain and (why := _mismatch(path, cfg)) is not None:
        banner(f"reward checkpoint {path} was pretrained with other settings ({why}): pretraining a new one "
               f"for this run in its place")
        pretrain_reward_model(cfg, path, precision)
    model = load_reward_model(source, device=device, alpha=cfg.reward.alpha, amp=precision.amp,
                              channels_last=precision.channels_last)
    origin = _describe(path) if local else "from the Hub"
    print(f"reward model: {model.config.backbone} at {model.image_size}px from {source} ({origin})", flush=True)
    return model


def checkpoint_source(cfg: DictConfig, checkpoint_given: bool = False) -> str:
    """``reward.checkpoint``; for a baseline left at the config files' default, a file of its own
    beside it (``<stem>_<method>.pth``), so that methods never replace each other's pretraining."""
    source = str(cfg.reward.checkpoint)
    if cfg.reward_model == "ours" or checkpoint_given or source.startswith("hf://"):
        return source
    path = Path(source).expanduser()
    return str(path.with_name(f"{path.stem}_{reward_method(cfg.reward_model)}{path.suffix}"))


def _same_pretraining(last: Path, config: Any) -> bool:
    """Whether ``last`` is a checkpoint of a pretraining with exactly ``config`` (resume aside)."""
    if not last.is_file():
        return False
    try:
        saved = read_checkpoint(last).get("train_config") or {}
    except (CheckpointError, OSError):  # a damaged leftover: train from scratch
        return False
    wanted = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
    added = {f.name: f.default for f in fields(config)}  # keys newer than the checkpoint: their defaults
    return all(saved.get(k, added.get(k)) == v for k, v in wanted.items() if k not in ("resume", "progress_bar"))


def pretrain_reward_model(cfg: DictConfig, path: Path, precision: Precision) -> Path:
    """Multi-task pretraining on ``pretrain.tasks`` + the run's task; the result is saved at ``path``
    with the run's :func:`pretrain_request` added to its provenance."""
    from video2reward.train import TrainConfig, pretrain

    p = cfg.pretrain
    tasks = list(dict.fromkeys([*p.tasks, cfg.task_name]))
    root = ensure_demos(cfg, tasks)
    out_dir = path.parent / f"{path.stem}_pretrain"
    method = reward_method(cfg.reward_model)
    config = TrainConfig(
        data_path=str(root), output_dir=str(out_dir), tasks=tasks, backbone=p.backbone, image_size=p.image_size,
        steps=p.steps, batch_size=p.batch_size, lr=p.lr, shift_pixels=p.shift_pixels, seed=p.seed,
        precision=precision.requested, method=method, label_std=p.label_std, rank_weight=p.get("rank_weight"),
        head=p.head)
    if _same_pretraining(out_dir / "checkpoint_last.pth", config):  # a killed pretraining continues
        config.resume = "auto"
    checkpoint = pretrain(config)
    state = read_checkpoint(checkpoint)
    state["provenance"] = {**state.get("provenance", {}), "drm_request": pretrain_request(cfg)}
    atomic_torch_save(state, path)
    banner(f"pretrained reward model saved to {path} (training outputs and eval plots in {out_dir})")
    return path


def build_reward(cfg: DictConfig, device: torch.device, precision: Precision,
                 checkpoint_given: bool = False) -> RewardFunction:
    """The run's reward for ``reward_model``, with its online update when ``online_finetune`` is set:
    push-back refinement for PROGRESSOR, the expert-vs-agent discriminator for ``rank2reward`` and
    ``gail`` (which has nothing else to learn from, so it needs it); the other baselines have none."""
    if cfg.reward_model == "env":
        return EnvReward()
    if cfg.reward_model == "sparse":
        return SparseReward()
    method = reward_method(cfg.reward_model)
    if method not in METHODS:
        raise RewardSetupError(f"unknown reward_model {cfg.reward_model!r}")
    if method in ONLINE_ONLY:
        if not cfg.online_finetune:
            raise RewardSetupError(f"reward_model={method} learns only online, from the agent's frames: it needs "
                                   f"online_finetune=true")
        model = build_model(method, {"backbone": cfg.pretrain.backbone, "image_size": cfg.image_size},
                            amp=precision.amp, channels_last=precision.channels_last).to(device).eval()
        print(f"reward model: {method}, {cfg.pretrain.backbone} at {cfg.image_size}px, trained online only", flush=True)
    else:
        model = resolve_reward_model(cfg, device, precision, checkpoint_given)
    if model.image_size != cfg.image_size:
        raise RewardSetupError(f"reward model takes {model.image_size}px frames but image_size={cfg.image_size}; "
                               f"set image_size to match the checkpoint")
    finetuner_class = type(model).finetuner_class
    finetuner = None
    if cfg.online_finetune and finetuner_class is not None:
        finetuner = finetuner_class(model, load_expert_demos(cfg, model.image_size),
                                    finetuner_class.config_from(cfg.finetune), amp=precision.amp, seed=cfg.seed)
        if cfg.finetune.resume_optimizer:
            _resume_finetune_optimizer(str(cfg.reward.checkpoint), finetuner)
    r = cfg.reward
    try:
        return frame_reward(model, finetuner=finetuner, alpha=r.alpha, relabel=r.relabel, train_mode=r.train_mode,
                            name=method, form=r.get("form", "default"),
                            success_bonus=float(r.get("success_bonus", 0.0)),
                            refresh_budget=int(r.get("refresh_budget", 0)), subgoals=subgoal_config(r))
    except ValueError as exc:  # settings the reward refuses together (reward.subgoals with relabel=paper, ...)
        raise RewardSetupError(f"reward_model={cfg.reward_model}: {exc}") from None


def subgoal_config(r: DictConfig) -> SubgoalConfig | None:
    """``reward.subgoals=uvd``'s settings (``reward.uvd``), or ``None``."""
    if r.get("subgoals", "none") == "none":
        return None
    u = r.uvd
    return SubgoalConfig(UVDConfig(gamma=float(u.gamma), min_gap=int(u.min_gap), distance=str(u.distance)),
                         advance=str(u.advance), threshold=float(u.threshold))


def _resume_finetune_optimizer(source: str, finetuner: OnlineFinetuner) -> None:
    """``finetune.resume_optimizer``: AdamW continues from the reward checkpoint's optimiser state
    (the released code loads ``optim_state_dict``); a checkpoint without one keeps a fresh AdamW."""
    state = None if source.startswith("hf://") else saved_optimizer_state(read_checkpoint(Path(source).expanduser()))
    if state is None:
        print(f"finetune.resume_optimizer: {source} holds no optimiser state; refinement starts a fresh AdamW",
              flush=True)
        return
    finetuner.load_optimizer_state(state)
    print(f"finetune.resume_optimizer: refinement AdamW continues from the state saved in {source}", flush=True)
