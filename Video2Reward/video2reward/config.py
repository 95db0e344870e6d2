"""Configuration of a pretraining run and its command line (``main_ours.py``, ``main.py``).

:class:`TrainConfig` holds every setting (each field documented where it is declared); the named
recipes are :data:`PRESETS`; :func:`config_from_args` turns flags into a config (preset values,
overridden by the flags given). ``main_ours.py`` trains PROGRESSOR with the released script's flags;
``main.py`` adds ``--method`` (a key of :data:`video2reward.methods.TRAINABLE`) and
``--method_config KEY=VALUE ...`` for the baseline's own settings (docs/baselines.md). The training
loop is :mod:`video2reward.train`.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

from . import augment as aug
from .data import RESIZES
from .flags import add_flags, setting
from .methods import MODELS, PROGRESSOR, TRAINABLE, config_class, make_config, model_class
from .methods.progressor import RANK_WEIGHT, ProgressorTraining
from .methods.viper import ViperTraining
from .model import BACKBONES
from .precision import PRECISIONS, add_precision_flag

AUGMENTATIONS = {"metaworld": aug.METAWORLD, "epic": aug.EPIC, "crop": aug.CROP_ONLY, "shift": aug.SHIFT}
# tuples per optimiser step of each baseline when --batch_size is not given (each method declares its own)
METHOD_BATCH_SIZES: dict[str, int] = {m: cls.default_batch_size for m, cls in MODELS.items() if cls.default_batch_size}


@dataclass
class TrainConfig(ProgressorTraining, ViperTraining):
    """Every setting of a pretraining run, each declared once with its flag's help (the flags of
    :func:`build_parser` are built from these fields); the defaults are the ``metaworld-cpu`` preset.
    PROGRESSOR's own settings (triplets, loss) are inherited from
    :class:`~video2reward.methods.progressor.ProgressorTraining`, VIPER's (``tokenizer``) from
    :class:`~video2reward.methods.viper.ViperTraining`; a baseline's come in ``method_config``."""

    data_path: str = setting("", "dataset root (Meta-World demos, EPIC-style frame folders or videos)", required=True)
    output_dir: str = setting("outputs/reward_model", "checkpoints, logs, metrics")
    tasks: list[str] | None = setting(None, "only these task folders (default: all)")
    cache_dir: str | None = setting(None, "decoded-frame cache (default <data_path>/.v2r_cache)")
    backbone: str = setting("convnet_spatial", " | ".join(BACKBONES))
    image_size: int | None = setting(None, "model input size (default: the frames' recorded size when the data "
                                           "records one, else the backbone's)")
    resize: str = setting("fit", "frames of another size: fit = bicubic resize + centre crop; epic = bilinear "
                                 "resize + centre crop, the released EPIC input", choices=RESIZES)
    batch_size: int = setting(1024, "triplets (a baseline: tuples) per optimiser step and process; the head is "
                                    "cheap, frames are what cost")
    steps: int | None = setting(2000, "optimiser steps; overrides --epochs")
    epochs: float = setting(1.0, "training length in epochs (one triplet per training frame) when --steps is not given")
    time_limit: float | None = setting(None, "stop training after this many minutes (then save and evaluate as usual)")
    lr: float = setting(3e-4, "AdamW learning rate (EPIC script 2e-4, released Meta-World pretraining 5e-5)")
    weight_decay: float = setting(0.01, "AdamW decoupled weight decay")
    warmup_steps: int | None = setting(100, "linear warm-up steps from 0; none: from --warmup_epochs")
    warmup_epochs: float = setting(0.0, "linear warm-up in epochs (used when --warmup_steps is not given)")
    lr_schedule: str = setting("cosine", "after warm-up: constant, or cosine decay to 0 at the last step",
                               choices=("constant", "cosine"))
    grad_clip: float = setting(1.0, "max gradient norm; 0 disables clipping")
    augment: bool = setting(True, "augment training frames with --augmentation (one geometric draw per triplet/group)")
    augmentation: str = setting("shift", "metaworld: photometric + crop 0.8-1; epic: + crop 0.2-1 and flips; crop: "
                                         "crop only; shift: +-N px translation, N = --shift_pixels",
                                choices=tuple(sorted(AUGMENTATIONS)))
    shift_pixels: int = setting(2, "largest translation of the shift augmentation, in pixels")
    balance_tasks: bool = setting(True, "draw a task uniformly, then one of its trajectories")
    precision: str = setting("auto", None)  # auto (bf16 only where the hardware runs it natively) | bf16 | fp32 (--no_amp)
    seed: int = setting(0, "seed of model init and batch sampling")
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    num_workers: int = setting(1, "background processes preparing (sampling + augmenting) batches; 0 = inline")
    threads: int | None = setting(None, "torch intra-op threads of the training process (default: torch's; 1 is "
                                        "faster on a busy CPU)")
    eval_every: int = setting(0, "evaluate on the test split every N steps (0: only at the end)")
    save_every: int = setting(0, "also write checkpoint_<step>.pth every N steps (0: only checkpoint_last.pth)")
    keep_last: int = setting(3, "periodic checkpoint_<step>.pth files kept (older ones are deleted)")
    save_minutes: float = setting(5.0, "rewrite checkpoint_last.pth every N minutes of training, so a killed run "
                                       "loses at most that much; 0 = off; SIGTERM / Ctrl-C always save")
    log_every: int = setting(10, "train_log.csv / TensorBoard interval in steps")
    resume: str | None = setting(None, "continue exactly from a checkpoint (no value: <output_dir>/checkpoint_last.pth "
                                       "if it exists)", nargs="?", const="auto")
    distributed: bool = setting(False, "DDP; launch with torchrun --nproc_per_node=N (gloo on CPU, nccl on GPU)",
                                action="store_true")
    push_to_hub: str | None = setting(None, "upload the final checkpoint to this Hugging Face repo at the end",
                                      metavar="REPO")
    normalize_prediction: bool = setting(True, "progress labels are fractions (mid-init)/(goal-init) in [0, 1]; "
                                               "always on, accepted for the released flag set (default True)")
    final_eval: bool = setting(True, "skip the evaluation on the test split (train split if none) after training",
                               names=("--no_final_eval",), action="store_false")
    progress_bar: bool = setting(True, "no tqdm bars (for log files)", names=("--no_progress_bar",),
                                 action="store_false")
    method: str = setting(PROGRESSOR, None)  # the model trained (a key of TRAINABLE); main_ours.py: progressor
    method_config: dict[str, Any] = setting(help=None, default_factory=dict)  # a baseline's own config fields, e.g. {"margin": 0.3}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        for name, low in (("batch_size", 1), ("log_every", 1), ("keep_last", 1), ("num_workers", 0),
                          ("eval_every", 0), ("save_every", 0), ("image_size", 8), ("steps", 1), ("warmup_steps", 0),
                          ("threads", 1)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < low):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, positive in (("lr", True), ("epochs", True), ("time_limit", True), ("weight_decay", False),
                               ("warmup_epochs", False), ("grad_clip", False), ("save_minutes", False)):
            value = getattr(self, name)
            if value is not None and not (value > 0 if positive else value >= 0):
                raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {', '.join(RESIZES)}, got {self.resize!r}")
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {sorted(AUGMENTATIONS)}, got {self.augmentation!r}")
        if self.shift_pixels < 0:
            raise ValueError(f"shift_pixels must be >= 0, got {self.shift_pixels}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not self.normalize_prediction:
            raise ValueError("normalize_prediction=False is not supported: progress labels are fractions in [0, 1]")
        if self.method not in TRAINABLE:
            raise ValueError(f"method must be one of {', '.join(TRAINABLE)}, got {self.method!r}")
        self.method_config = dict(self.method_config)
        self.model_config()  # refuse unknown or invalid fields before any work

    def model_config(self) -> Any:
        """The method's model config: its fields that are also flags here (``backbone``,
        ``image_size``, PROGRESSOR's ``head``) from the flags, then ``method_config``."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(config_class(self.method))
                  if f.name != "method" and f.name in self.__dataclass_fields__}
        try:
            return make_config(self.method, {**shared, **self.method_config})
        except TypeError as exc:  # an unknown field
            raise ValueError(f"method_config of {self.method}: {exc}") from None


# Named recipes; explicit flags override them. "metaworld-cpu" is TrainConfig's defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "metaworld-cpu": {},
    "metaworld-paper": dict(backbone="resnet18_84", head="concat", batch_size=256, steps=10_000, lr=5e-5, warmup_steps=500,
                            lr_schedule="constant", randomize=True, label_std="delta", grad_clip=1.0,
                            augmentation="metaworld", shared_embedding=False),
    "epic": dict(backbone="resnet34_224", head="concat", batch_size=256, lr=2e-4, lr_schedule="constant", label_std=0.1,
                 negatives=True, augmentation="epic", grad_clip=0.0, shared_embedding=False, steps=None, epochs=100,
                 warmup_epochs=1.0, warmup_steps=None, balance_tasks=False),
}
# the released EPIC pipeline's input: 224 px by bilinear resize + centre crop (`epic` keeps our bicubic fit)
PRESETS["epic-release"] = {**PRESETS["epic"], "resize": "epic"}


def augmentation_config(cfg: TrainConfig) -> aug.AugmentConfig:
    """The named augmentation of ``cfg``, with ``shift_pixels`` applied to the shift recipe."""
    base = AUGMENTATIONS[cfg.augmentation]
    return dataclasses.replace(base, shift=cfg.shift_pixels) if cfg.augmentation == "shift" else base


# ------------------------------------------------------------------------------------ CLI
def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``["margin=0.3", "name=x"]`` -> ``{"margin": 0.3, "name": "x"}`` (Python literals, else strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def build_parser(methods: bool = False) -> argparse.ArgumentParser:
    """The flags of the released ``main_ours.py`` plus ours (``methods``: and ``--method``,
    ``--method_config``, for ``main.py``), one per :class:`TrainConfig` field. Unset flags take the
    preset's value."""
    p = argparse.ArgumentParser(
        prog="main.py" if methods else "main_ours.py", argument_default=argparse.SUPPRESS,
        description=("Pretrain a video reward model (PROGRESSOR or a baseline) on expert videos." if methods else
                     "Pretrain the PROGRESSOR progress model on expert videos."),
        epilog="Presets: " + "; ".join(f"{k}: {v or 'the defaults shown'}" for k, v in PRESETS.items()))
    if methods:
        p.add_argument("--method", choices=TRAINABLE, default=PROGRESSOR,
                       help=f"what to train: a reward method or a model one builds on (default {PROGRESSOR}); the "
                            "PROGRESSOR-only flags (--head, --label_std, --negatives, --rank_weight, "
                            "--shared_embedding, ...) do not apply to the others")
        p.add_argument("--method_config", nargs="+", metavar="KEY=VALUE",
                       help="the method's own model settings, e.g. margin=0.3 (fields in docs/baselines.md); "
                            "default batch sizes (tuples per step): "
                            + ", ".join(f"{k} {v}" for k, v in METHOD_BATCH_SIZES.items()))
    p.add_argument("--preset", choices=sorted(PRESETS), default="metaworld-cpu", help="named recipe (default metaworld-cpu)")
    add_flags(p, TrainConfig, skip=() if methods else tuple(f.name for f in dataclasses.fields(ViperTraining)))
    add_precision_flag(p, default=argparse.SUPPRESS)
    return p


def config_from_args(argv: Sequence[str] | None = None, methods: bool = False) -> TrainConfig:
    """Preset values, overridden by the flags given on the command line (``methods``: ``main.py``'s
    parser; a baseline without ``--batch_size`` gets its :data:`METHOD_BATCH_SIZES` entry)."""
    parser = build_parser(methods)
    args = vars(parser.parse_args(argv))
    values = dict(PRESETS[args.pop("preset", "metaworld-cpu")])
    if "method_config" in args:
        try:
            args["method_config"] = parse_assignments(args["method_config"])
        except ValueError as exc:
            parser.error(f"--method_config: {exc}")
    method_batch = model_class(args.get("method", PROGRESSOR)).default_batch_size
    if method_batch and "batch_size" not in args:
        values["batch_size"] = method_batch
    if "steps" not in args and ("epochs" in args):
        values["steps"] = None  # --epochs given alone: let it define the length
    if "warmup_steps" not in args and "warmup_epochs" in args:
        values["warmup_steps"] = None
    values.update(args)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        return TrainConfig(**{k: v for k, v in values.items() if k in known})
    except ValueError as exc:
        parser.error(str(exc))


__all__ = ["AUGMENTATIONS", "METHOD_BATCH_SIZES", "PRESETS", "RANK_WEIGHT", "TrainConfig", "augmentation_config",
           "build_parser", "config_from_args", "parse_assignments"]
