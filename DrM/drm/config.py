"""Checks of a run's configuration, before any work is done.

:func:`check_config` validates types, ranges and known choices of the keys in
``DrM/cfgs/config.yaml`` (all problems in one message). :func:`check_resume` compares the
configuration stored in a run directory's snapshot with the new one: a run continues when only
:data:`HARMLESS_KEYS` differ (how long, how often to evaluate / log / save, where to compute), and
stops naming the keys otherwise (another seed, agent or reward would silently mix two runs).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from video2reward.methods.progressor import HEAD_INPUTS
from video2reward.model import BACKBONES
from video2reward.precision import PRECISIONS
from video2reward.methods.pushback import CROPS
from video2reward.methods.pushback import PARAMS as FINETUNE_PARAMS

from .envs import OBS_TYPES, RENDER_QUALITIES, TASKS
from .rewards import ENV_REWARDS, RELABEL_MODES, REWARD_FORMS, REWARD_MODELS

# agent frames of a push-back step: the newest frame of a separate replay sample, or the oldest stacked
# frame of the agent's update batch (released); the workspace picks them
AGENT_FRAMES = ("replay", "update_batch")

FIRST_FRAMES = ("reset", "after_first_action")  # the episode's init frame (drm.workspace.Workspace._begin)

# keys that may change between a run and its continuation in the same run directory
HARMLESS_KEYS = frozenset({
    "num_train_frames", "eval_every_frames", "num_eval_episodes", "log_every_frames", "save_video",
    "save_snapshot", "snapshot_every_frames", "num_threads", "device", "agent.device",
})

_MIN_INT = {  # integer keys and their smallest allowed value
    "frame_stack": 1, "action_repeat": 1, "episode_length": 1, "image_size": 8, "seed": 0,
    "num_train_frames": 0, "num_seed_frames": 0, "eval_every_frames": 1, "num_eval_episodes": 0,
    "log_every_frames": 1, "snapshot_every_frames": 1, "replay_buffer_size": 2, "batch_size": 1,
    "online_finetune_every_step": 1, "finetune.expert_batch_size": 1, "finetune.replay_batch_size": 1,
    "demos.num_train": 1, "demos.num_test": 0, "demos.seed": 0, "pretrain.steps": 1, "pretrain.batch_size": 1,
    "pretrain.image_size": 8, "pretrain.shift_pixels": 0, "pretrain.seed": 0, "agent.hidden_dim": 1,
    "agent.feature_dim": 1, "agent.num_expl_steps": 0, "agent.update_every_steps": 1, "agent.aug_pad": 0,
    "reward.refresh_budget": 0,
}
_POSITIVE = ("agent.lr", "finetune.lr", "pretrain.lr", "agent.critic_target_tau", "agent.stddev_clip")
_NON_NEGATIVE = ("reward.alpha", "reward.success_bonus", "finetune.pushback_weight", "finetune.clip_grad", "finetune.sigma_scale")
_BOOL = ("save_video", "save_snapshot", "online_finetune", "demos.keep_failures", "reward.train_mode",
         "finetune.round_label_std", "finetune.resume_optimizer")
_CHOICES = {"reward_model": REWARD_MODELS, "reward.relabel": RELABEL_MODES, "reward.form": REWARD_FORMS, "render_quality": RENDER_QUALITIES,
            "precision": PRECISIONS, "pretrain.backbone": tuple(BACKBONES), "pretrain.head": tuple(HEAD_INPUTS),
            "task_name": tuple(TASKS), "first_frame": FIRST_FRAMES, "obs_type": OBS_TYPES,
            "finetune.agent_frames": AGENT_FRAMES,
            "finetune.crop": CROPS, "finetune.params": FINETUNE_PARAMS}


class ConfigError(ValueError):
    """A configuration that cannot run; the message names every offending key."""


def _get(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every key with a wrong type, range or choice."""
    c = OmegaConf.to_container(cfg, resolve=True)
    problems = []

    def bad(key: str, want: str) -> None:
        problems.append(f"{key}={_get(c, key)!r} (want {want})")

    for key, low in _MIN_INT.items():
        v = _get(c, key)
        if v is not _MISSING and not (_is_int(v) and v >= low):
            bad(key, f"an integer >= {low}")
    for key in _POSITIVE:
        v = _get(c, key)
        if v is not _MISSING and not (_is_number(v) and v > 0):
            bad(key, "a number > 0")
    for key in _NON_NEGATIVE:
        v = _get(c, key)
        if v is not _MISSING and not (_is_number(v) and v >= 0):
            bad(key, "a number >= 0")
    for key in _BOOL:
        v = _get(c, key)
        if v is not _MISSING and not isinstance(v, bool):
            bad(key, "true or false")
    for key, choices in _CHOICES.items():
        v = _get(c, key)
        if v is not _MISSING and v not in choices:
            bad(key, "one of " + ", ".join(map(str, choices)) if len(choices) <= 12 else "a task of DrM/cfgs/task")
    nstep, discount = c.get("nstep"), c.get("discount")
    if not (nstep == "schedule" or (_is_int(nstep) and nstep >= 1)):
        bad("nstep", "an integer >= 1 or schedule")
    if not (discount == "schedule" or (_is_number(discount) and 0 < discount <= 1)):
        bad("discount", "a number in (0, 1] or schedule")
    threads = c.get("num_threads")
    if threads is not None and not (_is_int(threads) and threads >= 1):
        bad("num_threads", "null or an integer >= 1")
    if c.get("amp") is not None and not isinstance(c.get("amp"), bool):
        bad("amp", "null, true or false")
    if not (isinstance(c.get("device"), str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", c["device"])):
        bad("device", "auto, cpu, cuda or cuda:N")
    label_std = _get(c, "pretrain.label_std")
    if label_std is not _MISSING and not (label_std == "delta" or (_is_number(label_std) and label_std > 0)):
        bad("pretrain.label_std", "a number > 0 or delta")
    flag = _get(c, "reward.pretrain_if_missing")
    if flag is not _MISSING and flag is not None and not isinstance(flag, bool):
        bad("reward.pretrain_if_missing", "null, true or false")
    if c.get("reward_model") in ENV_REWARDS:
        for key, default in (("reward.form", "default"), ("reward.success_bonus", 0)):
            if _get(c, key) not in (_MISSING, default):
                problems.append(f"{key}={_get(c, key)!r} applies to learned rewards only (reward_model="
                                f"{c['reward_model']} is the env's own)")
    if _get(c, "reward.refresh_budget") not in (_MISSING, 0) and c.get("online_finetune") \
            and _get(c, "finetune.params") != "head":
        problems.append("reward.refresh_budget > 0 keeps values across refinement steps, which needs "
                        "finetune.params=head (the encoder frozen)")
    if problems:
        raise ConfigError(f"invalid config (DrM/cfgs/config.yaml + overrides): {'; '.join(problems)}")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def config_differences(saved: Mapping[str, Any], cfg: DictConfig) -> list[str]:
    """Dotted keys, present in both, whose values differ between ``saved`` and ``cfg`` (resolved),
    harmless keys left out. Keys only one side has are keys added to or removed from the config files
    since the snapshot was written; they do not stop a resume (another agent differs in
    ``agent._target_`` anyway)."""
    old, new = _flatten(saved), _flatten(OmegaConf.to_container(cfg, resolve=True))
    return sorted(k for k in old.keys() & new.keys() if k not in HARMLESS_KEYS and old[k] != new[k])


def check_resume(saved: Mapping[str, Any], cfg: DictConfig, snapshot: str) -> None:
    """Raise :class:`ConfigError` when the run in ``snapshot`` (config ``saved``) is not the one
    ``cfg`` describes, up to :data:`HARMLESS_KEYS`."""
    diffs = config_differences(saved, cfg)
    if diffs:
        old, new = _flatten(saved), _flatten(OmegaConf.to_container(cfg, resolve=True))
        shown = ", ".join(f"{k} ({old[k]!r} -> {new[k]!r})" for k in diffs[:6])
        more = f" and {len(diffs) - 6} more" if len(diffs) > 6 else ""
        raise ConfigError(f"{snapshot} belongs to a run with other settings: {shown}{more}; continue it with "
                          f"its own settings (only {', '.join(sorted(HARMLESS_KEYS - {'agent.device'}))} may "
                          f"change) or start in a new run directory (hydra.run.dir=...)")


__all__ = ["ConfigError", "HARMLESS_KEYS", "check_config", "check_resume", "config_differences"]
