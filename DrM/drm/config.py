"""Checks of a run's configuration, before any work is done.

:func:`check_config` checks every key against its declaration in :mod:`drm.schema` (type, range,
choices; all problems in one message) and the rules that tie keys together. :func:`check_resume`
compares the configuration stored in a run directory's snapshot with the new one: a run continues when
only :data:`HARMLESS_KEYS` differ (how long, how often to evaluate / log / save, where to compute), and
stops naming the keys otherwise (another seed, agent or reward would silently mix two runs).
"""
from __future__ import annotations

import re
from dataclasses import Field, fields, is_dataclass
from types import UnionType
from typing import Any, Iterator, Mapping, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, OmegaConf

from . import DRM_ROOT
from .rewards import ENV_REWARDS
from .schema import AGENTS, Config, DrQV2Config


def _settings(schema: type, prefix: str = "") -> Iterator[tuple[str, Field, Any]]:
    """``(dotted key, field, type)`` of every setting of ``schema``, nested sections flattened."""
    hints = get_type_hints(schema)
    for f in fields(schema):
        if is_dataclass(hints[f.name]):
            yield from _settings(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, f, hints[f.name]


# keys that may change between a run and its continuation in the same run directory
HARMLESS_KEYS = frozenset(key for schema, prefix in ((Config, ""), *((a, "agent.") for a in AGENTS.values()))
                          for key, f, _ in _settings(schema, prefix) if f.metadata.get("may_change"))


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


def _optional(kind: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``, ``X`` -> ``(X, False)``."""
    args = get_args(kind)
    if get_origin(kind) in (Union, UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return kind, False


def _is(value: Any, kind: Any) -> bool:
    if kind in (int, float):  # a float key takes an int; neither takes a bool (or nan)
        return isinstance(value, (int, kind)) and not isinstance(value, bool) and value == value
    if get_origin(kind) is list:
        return isinstance(value, list) and all(_is(v, get_args(kind)[0]) for v in value)
    return kind is Any or isinstance(value, kind)


_TESTS = {"choices": lambda v, c: v in c, "at_least": lambda v, b: v >= b, "above": lambda v, b: v > b,
          "at_most": lambda v, b: v <= b, "pattern": lambda v, p: re.fullmatch(p[0], v) is not None}


def _fits(value: Any, kind: Any, checks: Mapping[str, Any]) -> bool:
    kind, optional = _optional(checks.get("kind", kind))
    if value is None:
        return optional or kind is Any
    if value in checks.get("words", ()):
        return True
    return _is(value, kind) and all(test(value, checks[name]) for name, test in _TESTS.items() if name in checks)


_NOUNS = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
          bool: ("true or false", "booleans")}


def _want(kind: Any, checks: Mapping[str, Any]) -> str:
    kind, optional = _optional(checks.get("kind", kind))
    if "choices" in checks:
        choices = checks["choices"]
        want = "one of " + ", ".join(map(str, choices)) if len(choices) <= 12 else "a task of DrM/cfgs/task"
    elif "pattern" in checks:
        want = checks["pattern"][1]
    else:
        want = f"a list of {_NOUNS[get_args(kind)[0]][1]}" if get_origin(kind) is list else _NOUNS[kind][0]
        if "above" in checks and "at_most" in checks:
            want += f" in ({checks['above']}, {checks['at_most']}]"
        elif "above" in checks or "at_least" in checks:
            want += f" > {checks['above']}" if "above" in checks else f" >= {checks['at_least']}"
    words = ["null"] * optional + want.split(" or ") + list(checks.get("words", ()))
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every key whose value does not fit its declaration in
    :mod:`drm.schema`, and settings that do not go together."""
    c = OmegaConf.to_container(cfg, resolve=True)
    agent = {a._target_: a for a in AGENTS.values()}.get(_get(c, "agent._target_"), DrQV2Config)
    problems = [f"{key}={value!r} (want {_want(kind, f.metadata)})"
                for key, f, kind in (*_settings(Config), *_settings(agent, "agent."))
                if (value := _get(c, key)) is not _MISSING and not _fits(value, kind, f.metadata)]
    if c.get("reward_model") in ENV_REWARDS:
        for key, default in (("reward.form", "default"), ("reward.success_bonus", 0), ("reward.subgoals", "none")):
            if _get(c, key) not in (_MISSING, default):
                problems.append(f"{key}={_get(c, key)!r} applies to learned rewards only (reward_model="
                                f"{c['reward_model']} is the env's own)")
    if _get(c, "reward.refresh_budget") not in (_MISSING, 0) and c.get("online_finetune") \
            and _get(c, "finetune.params") != "head":
        problems.append("reward.refresh_budget > 0 keeps values across refinement steps, which needs "
                        "finetune.params=head (the encoder frozen)")
    if problems:
        raise ConfigError(f"invalid config (DrM/cfgs/config.yaml + overrides): {'; '.join(problems)}")


def compose_config(*overrides: str) -> DictConfig:
    """The configuration ``train_mw.py`` runs with for ``overrides`` (``"task=toy-reach"``, ...)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(DRM_ROOT / "cfgs"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


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


__all__ = ["ConfigError", "HARMLESS_KEYS", "check_config", "check_resume", "compose_config", "config_differences"]
