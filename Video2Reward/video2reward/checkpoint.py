"""Saving and loading reward models (PROGRESSOR and the baselines of :mod:`video2reward.methods`) and the
other trained models of :data:`~video2reward.methods.MODELS` (VIPER's frame tokenizer).

Three on-disk formats are read, always with ``torch.load(weights_only=True)`` (no pickled code):

* ours: ``{"format": "progressor", "method": ..., "config": {...}, "state_dict": {...}, ...}`` — the
  method and its config travel with the weights (a file without ``method`` is a PROGRESSOR model);
  training checkpoints add ``optimizer``, ``step``, ``rng``, ...
* the released Meta-World file ``all_tasks.pth``: ``{"state_dict", "optim_state_dict"}``
* the released EPIC-KITCHENS file: ``{"model_state_dict", "optimizer_state_dict", "epoch"}``

For the released formats the variant is read off the weights' names and shapes.
"""
from __future__ import annotations

import os
import pickle
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .hub_files import resolve
from .io import atomic_torch_save
from .methods import METHODS, PROGRESSOR, PretrainedModel, RewardModel, build_model, make_config, method_of
from .methods.progressor import HEAD_INPUTS, ModelConfig
from .model import BACKBONES, CONVNETS, ConvNet
from .precision import resolve_precision

FORMAT = "progressor"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


def save_reward_model(model: nn.Module, path: str | os.PathLike, **extra: Any) -> Path:
    """Write any model of :data:`~video2reward.methods.MODELS` (method, config + weights) atomically
    (``save_model`` is the same function); ``extra`` entries (optimizer state, step, ...) are stored
    beside them and must be plain tensors / containers for ``weights_only`` loading."""
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "method": method_of(model), "config": asdict(model.config),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}
    atomic_torch_save(payload, path)
    return Path(path)


_MAGIC = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"\x1aE\xdf\xa3": "a WebM/MKV video",
          b"RIFF": "an AVI/WAV file", b"GIF8": "a GIF image", b"{": "a JSON/text file", b"%PDF": "a PDF"}


def _sniff(path: Path) -> str | None:
    """What a file that is not a torch checkpoint looks like (``None``: it may be one)."""
    with open(path, "rb") as f:
        head = f.read(12)
    if not head:
        return "an empty file"
    if head.startswith(b"PK") or head[:1] == b"\x80":  # torch's zip format / a legacy pickle
        return None
    if head[4:8] == b"ftyp":
        return "an MP4/MOV video"
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), "not a torch file")


def read_checkpoint(path: str | os.PathLike, what: str = "reward checkpoint") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with one-line errors for missing, corrupt or unsafe files.

    The messages never suggest ``weights_only=False`` (torch's own text does): that would run
    whatever code the file carries."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    kind = _sniff(path)
    if kind is not None:
        raise CheckpointError(f"{path}: not a {what} ({kind}); expected a .pth/.pt file written by torch.save")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(exc))))
        if not found and "Unsupported" not in str(exc):  # a damaged pickle stream, not a refused import
            raise CheckpointError(f"{path}: damaged {what} (unpickling failed: {_first_line(exc)})") from None
        what_found = f" ({', '.join(found)})" if found else ""
        raise CheckpointError(f"{path}: refused to load: it contains pickled Python objects{what_found}, which could run "
                              f"code when unpickled; only tensors and plain containers are read "
                              f"(torch.load weights_only=True). Re-save the weights as a plain state dict from a "
                              f"trusted copy") from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/... for truncated or foreign files
        raise CheckpointError(f"{path}: damaged or truncated {what} ({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    return obj


def _first_line(exc: BaseException) -> str:
    """The first line of torch's message, without its advice to load unsafely."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip() and "weights_only" not in ln]
    return lines[0] if lines else "no detail"


def read_provenance(path: str | os.PathLike) -> dict[str, Any] | None:
    """The provenance a checkpoint records (see :func:`video2reward.train.provenance`), if any."""
    provenance = read_checkpoint(path).get("provenance")
    return dict(provenance) if isinstance(provenance, Mapping) else None


def _strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix that DataParallel/DDP add to saved names."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _which_convnet(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The conv net whose parameter shapes the state dict has (the conv widths and the first fc
    layer's input, which separates a pooled map from a flattened 6 x 6 one)."""
    given = {k[len("model."):]: tuple(v.shape) for k, v in state_dict.items() if k.startswith("model.")}
    for name, kwargs in CONVNETS.items():
        own = {k: tuple(v.shape) for k, v in ConvNet(**kwargs).state_dict().items()}
        if own == given:
            return name
    raise CheckpointError(f"conv-net weights match none of {sorted(CONVNETS)} "
                          f"(first conv {given.get('body.0.weight')}, fc in {given.get('fc.0.weight')})")


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> ModelConfig:
    """Which variant a bare state dict belongs to, from its parameter names and shapes."""
    if "model.body.0.weight" in state_dict:
        backbone = _which_convnet(state_dict)
    elif "model.conv1.weight" in state_dict:
        if state_dict["model.conv1.weight"].shape[-1] == 3:
            backbone = "resnet18_84"
        elif "model.layer1.2.conv1.weight" in state_dict:
            backbone = "resnet34_224"
        else:
            backbone = "resnet18"
    else:
        raise CheckpointError("state dict has no backbone weights (expected keys like 'model.conv1.weight')")
    hidden = state_dict.get("proj.0.fc1.weight")
    if hidden is None:
        return ModelConfig(backbone=backbone)
    heads = {width: name for name, width in HEAD_INPUTS.items()}
    if hidden.shape[1] not in heads:
        raise CheckpointError(f"proj.0.fc1.weight takes {hidden.shape[1]} inputs; known heads take "
                              f"{', '.join(f'{w} ({n})' for n, w in HEAD_INPUTS.items())}")
    return ModelConfig(backbone=backbone, proj_hidden=int(hidden.shape[0]), head=heads[hidden.shape[1]])


def saved_method(obj: Mapping[str, Any]) -> str:
    """The method a checkpoint dict holds (files written before there were several: PROGRESSOR)."""
    config = obj.get("config") if obj.get("format") == FORMAT else None
    return str(obj.get("method") or (config or {}).get("method") or PROGRESSOR)


def split_checkpoint(obj: Mapping[str, Any], name: str = "checkpoint") -> tuple[Any, dict[str, torch.Tensor]]:
    """(config, model state dict) from any of the three formats; the config is the method's dataclass
    (:class:`~video2reward.model.ModelConfig` for PROGRESSOR)."""
    if obj.get("format") == FORMAT:
        try:
            config = make_config(saved_method(obj), obj["config"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{name}: unusable model config ({exc})") from None
        return config, _strip_prefix(obj["state_dict"])
    for key in ("state_dict", "model_state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            sd = _strip_prefix(obj[key])
            return infer_config(sd), sd
    raise CheckpointError(f"{name}: no model weights found (keys: {sorted(obj)[:8]}); expected 'state_dict' "
                          f"or 'model_state_dict'")


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], name: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with a one-line error listing the offending keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = [f"{k} {tuple(state_dict[k].shape)} != {tuple(own[k].shape)}"
             for k in sorted(set(own) & set(state_dict)) if tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        raise CheckpointError(f"{name}: weights do not match the model ({model.summary()}): {'; '.join(parts)}")
    model.load_state_dict(state_dict, strict=True)


def load_reward_model(source: str | os.PathLike, device: str | torch.device = "cpu", precision: str = "fp32",
                      **model_kwargs: Any) -> RewardModel:
    """A ready reward model (eval mode) from a file path or ``hf://owner/repo[@revision]/file``: a
    :class:`ProgressModel`, or the baseline model the file's ``method`` names (:func:`load_model`,
    refusing in one line a model that is not a reward, such as a tokenizer).
    """
    model = load_model(source, device, precision, **model_kwargs)
    if method_of(model) not in METHODS:
        raise CheckpointError(f"{source}: holds a {method_of(model)} model, which is not a reward model (one of "
                              f"{', '.join(METHODS)}); load it with video2reward.load_model")
    return model


save_model = save_reward_model  # for a model that is not a reward (a tokenizer)


def load_model(source: str | os.PathLike, device: str | torch.device = "cpu", precision: str = "fp32",
               **model_kwargs: Any) -> PretrainedModel:
    """A ready model (eval mode) of any of :data:`~video2reward.methods.MODELS` from a file path or
    ``hf://owner/repo[@revision]/file``: the reward model or other model the file's ``method`` names.

    Reads our format and both released formats. Inference runs in ``precision`` (default ``fp32``:
    exact, the released code's numbers; ``auto`` / ``bf16``: see :mod:`video2reward.precision`).
    ``model_kwargs`` (``amp``, ``channels_last``, ``alpha``, ``image_size``) override the stored
    configuration (where the model has that field) and the precision's choices.
    """
    chosen = resolve_precision(precision, device)
    model_kwargs.setdefault("amp", chosen.amp)
    model_kwargs.setdefault("channels_last", chosen.channels_last)
    source = str(source)
    if source.startswith("hf://"):
        path = resolve(source)
    else:
        path = Path(source).expanduser()
    obj = read_checkpoint(path)
    config, state_dict = split_checkpoint(obj, str(path))
    cfg = asdict(config)
    for key in ("alpha", "image_size"):
        if key in model_kwargs:
            value = model_kwargs.pop(key)
            if key in cfg:
                cfg[key] = value
    model = build_model(saved_method(obj), cfg, **model_kwargs)
    load_state_dict_strict(model, state_dict, str(path))
    return model.to(device).eval()


__all__ = ["BACKBONES", "CheckpointError", "infer_config", "load_model", "load_reward_model", "load_state_dict_strict",
           "read_checkpoint", "read_provenance", "save_model", "save_reward_model", "saved_method", "split_checkpoint"]
