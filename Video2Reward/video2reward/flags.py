"""Command-line flags built from dataclass fields, so that a setting is declared once.

A field declared with :func:`setting` carries its help text (and, where the type alone does not say
it, how the flag reads); :func:`add_flags` adds one flag per such field to an argparse parser,
named after the field (``--lr``), typed from the annotation, with the field's default shown in
the help. Flags default to ``argparse.SUPPRESS`` when the parser does, so a caller can tell the
flags given from the defaults.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

_TYPES = {"int": int, "float": float, "str": str}


def setting(default: Any = dataclasses.MISSING, help: str = "", *, default_factory: Any = dataclasses.MISSING,
            **flag: Any) -> Any:
    """A dataclass field with its flag's ``help``; ``flag``: argparse keywords that replace what the
    annotation implies (``type``, ``choices``, ``action``, ``nargs``, ...), and ``names``: the flag's
    option strings when they differ from ``--<field>``. ``help`` ``None``: no flag."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help, "flag": flag})


def _kind(annotation: str) -> tuple[str, bool]:
    """``"int | None"`` -> ``("int", True)``: the base type's name and whether ``None`` is allowed."""
    parts = [p.strip() for p in str(annotation).split("|")]
    optional = "None" in parts
    parts = [p for p in parts if p != "None"]
    return (parts[0] if len(parts) == 1 else "str"), optional


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "none"
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def add_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One flag for every :func:`setting` field of the dataclass ``cls`` (those in ``skip`` and those
    whose help is ``None`` left out): its own fields in declaration order, then the inherited ones."""
    own = cls.__dict__.get("__annotations__", {})
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
        if f.name in skip or "help" not in f.metadata or f.metadata["help"] is None:
            continue
        flag = dict(f.metadata["flag"])
        names = flag.pop("names", (f"--{f.name}",))
        kind, _ = _kind(f.type)
        kwargs: dict[str, Any] = {}
        if kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind.startswith("list["):
            kwargs.update(nargs="+", type=_TYPES.get(kind[5:-1], str))
        else:
            kwargs["type"] = _TYPES.get(kind, str)
        kwargs.update(flag)
        if kwargs.get("action") in ("store_true", "store_false", "store_const"):
            kwargs.pop("type", None)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        text = f.metadata["help"]
        if "required" not in kwargs and "(default" not in text and kwargs.get("action") not in ("store_true", "store_false"):
            text = f"{text} (default {_shown(default)})"
        parser.add_argument(*names, dest=f.name, help=text, **kwargs)


def check_at_least(parser: argparse.ArgumentParser, args: argparse.Namespace, lows: dict[str, int]) -> None:
    """``parser.error`` (one line, exit status 2) for the first flag of ``lows`` set below its minimum."""
    for name, low in lows.items():
        value = getattr(args, name)
        if value is not None and value < low:
            parser.error(f"--{name} must be >= {low}, got {value}")


__all__ = ["add_flags", "check_at_least", "setting"]
