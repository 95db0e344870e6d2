"""Configuration of a pretraining run and its command line (``main_ours.py``, ``main.py``).

:class:`TrainConfig` holds every setting (each field documented where it is declared); the named
recipes are :data:`PRESETS`; :func:`config_from_args` turns flags into a config (preset values,
overridden by the flags given). ``main_ours.py`` trains PROGRESSOR with the released script's flags;
``main.py`` adds ``--method`` (a key of :data:`video2reward.methods.PRETRAINABLE`) and
``--method_config KEY=VALUE ...`` for the baseline's own settings (docs/baselines.md). The training
loop is :mod:`video2reward.train`.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from . import augment as aug
from .data import RESIZES
from .losses import NEGATIVE_WEIGHT
from .methods import PRETRAINABLE, PROGRESSOR, make_config
from .model import BACKBONES, HEAD_INPUTS
from .precision import PRECISIONS, add_precision_flag
from .triplets import parse_label_std

RANK_WEIGHT = 100.0  # default weight of the order loss (shared-embedding batches); see docs/video2reward.md
AUGMENTATIONS = {"metaworld": aug.METAWORLD, "epic": aug.EPIC, "crop": aug.CROP_ONLY, "shift": aug.SHIFT}


# tuples per optimiser step of each baseline when --batch_size is not given: about the 256 frames
# the CPU preset's PROGRESSOR batch encodes (16 trajectories x 16 frames)
METHOD_BATCH_SIZES: dict[str, int] = {"tcn": 64, "vip": 64, "hold_r": 128, "hold_c": 16, "rank2reward": 128}


@dataclass
class TrainConfig:
    """Every setting of a pretraining run; the defaults are the ``metaworld-cpu`` preset."""

    data_path: str = ""  # dataset root; layouts in video2reward.data
    output_dir: str = "outputs/reward_model"  # checkpoints, logs and evaluation
    tasks: list[str] | None = None  # only these task folders (default: all)
    cache_dir: str | None = None  # decoded-frame cache (default: <data_path>/.v2r_cache)
    backbone: str = "convnet_spatial"  # a key of video2reward.model.BACKBONES
    image_size: int | None = None  # frame size fed to the model (default: the backbone's, 84 for convnet)
    resize: str = "fit"  # frames of another size: fit (bicubic) | epic (bilinear + centre crop, the released EPIC input)
    head: str = "distance"  # head input, a key of video2reward.model.HEAD_INPUTS ("concat": the released layout)
    batch_size: int = 1024  # triplets per optimiser step and process (the head is cheap; frames are what cost)
    steps: int | None = 2000  # optimiser steps; None: derived from `epochs`
    epochs: float = 1.0  # used when steps is None; one epoch = one triplet per training frame
    time_limit: float | None = None  # stop after this many minutes of training (then save + evaluate as usual)
    lr: float = 3e-4  # AdamW learning rate (EPIC script 2e-4, released Meta-World pretraining 5e-5)
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    warmup_steps: int | None = 100  # linear warm-up from 0; None: from warmup_epochs
    warmup_epochs: float = 0.0
    lr_schedule: str = "cosine"  # after warm-up: constant | cosine (decays to 0 at the last step)
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    randomize: bool = True  # randomised triplet endpoints (else init = first, goal = last frame)
    fixed_fraction: float = 0.0  # with randomize: share of triplets that still get fixed endpoints
    max_gap: int | None = None  # randomised endpoints: goal - init < max_gap (None: whole trajectory)
    label_std: str | float = 0.025  # a constant std, or "delta": sqrt(1/(goal-init))
    sigma_power: float = 0.0  # weight each triplet's KL by sigma^p (detached); 2 = beta-NLL with beta 1, 0 = plain KL
    rank_weight: float | None = None  # weight of the order loss on each group's K frames (None: RANK_WEIGHT with shared embedding, else 0)
    rank_temperature: float = 0.02  # margin scale of that loss (progress units)
    negatives: bool = False  # add negatives (middle frame from another video) toward N(-1, 0.1)
    negative_weight: float = NEGATIVE_WEIGHT
    augment: bool = True  # augment training frames with `augmentation` (one geometric draw per triplet/group)
    augmentation: str = "shift"  # metaworld (crop 0.8-1) | epic (crop 0.2-1 + flip) | crop (crop only) | shift (+-shift_pixels)
    shift_pixels: int = 2  # augmentation "shift": largest translation in pixels
    shared_embedding: bool = True  # encode K frames per trajectory once, build many triplets from them
    frames_per_traj: int = 16  # shared embedding: K frames encoded per trajectory
    trajs_per_batch: int = 16  # shared embedding: trajectories per step (batch_size triplets spread over them)
    balance_tasks: bool = True  # draw a task uniformly, then one of its trajectories
    precision: str = "auto"  # auto (bf16 only where the hardware runs it natively) | bf16 | fp32 (--no_amp)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 1  # background processes preparing (sampling + augmenting) batches; 0 = inline
    threads: int | None = None  # torch intra-op threads of the training process (None: torch's default)
    eval_every: int = 0  # evaluate on the test split every N steps (0: only at the end)
    save_every: int = 0  # also write checkpoint_<step>.pth every N steps (0: only checkpoint_last.pth)
    keep_last: int = 3  # periodic checkpoint_<step>.pth files kept (older ones are deleted)
    save_minutes: float = 5.0  # rewrite checkpoint_last.pth every N minutes of training (0: off)
    log_every: int = 10  # train_log.csv / TensorBoard interval in steps
    resume: str | None = None  # checkpoint to continue from; "auto": output_dir/checkpoint_last.pth if present
    distributed: bool = False  # DDP under torchrun (gloo on CPU, nccl on GPU)
    push_to_hub: str | None = None  # Hugging Face repo id to upload checkpoint_last.pth to at the end
    normalize_prediction: bool = True  # labels are progress fractions in [0, 1]; always on (see docs)
    final_eval: bool = True  # evaluate on the test split (train split if none) at the end
    progress_bar: bool = True
    method: str = PROGRESSOR  # the reward method trained (video2reward.methods.PRETRAINABLE); main_ours.py: progressor
    method_config: dict[str, Any] = field(default_factory=dict)  # a baseline's own config fields, e.g. {"margin": 0.3}

    def __post_init__(self) -> None:
        self.label_std = parse_label_std(self.label_std)
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if self.head not in HEAD_INPUTS:
            raise ValueError(f"head must be one of {', '.join(HEAD_INPUTS)}, got {self.head!r}")
        for name, low in (("batch_size", 1), ("frames_per_traj", 2), ("trajs_per_batch", 1), ("log_every", 1),
                          ("keep_last", 1), ("num_workers", 0), ("eval_every", 0), ("save_every", 0),
                          ("image_size", 8), ("steps", 1), ("warmup_steps", 0), ("max_gap", 2), ("threads", 1)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < low):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, positive in (("lr", True), ("epochs", True), ("rank_temperature", True), ("time_limit", True),
                               ("weight_decay", False), ("warmup_epochs", False), ("grad_clip", False),
                               ("save_minutes", False), ("negative_weight", False)):
            value = getattr(self, name)
            if value is not None and not (value > 0 if positive else value >= 0):
                raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
        if not 0 <= self.fixed_fraction <= 1:
            raise ValueError(f"fixed_fraction must be in [0, 1], got {self.fixed_fraction}")
        if self.resize not in RESIZES:
            raise ValueError(f"resize must be one of {', '.join(RESIZES)}, got {self.resize!r}")
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {sorted(AUGMENTATIONS)}, got {self.augmentation!r}")
        if self.sigma_power < 0:
            raise ValueError(f"sigma_power must be >= 0, got {self.sigma_power}")
        if self.rank_weight is None:
            self.rank_weight = RANK_WEIGHT if self.shared_embedding else 0.0
        self.rank_weight = float(self.rank_weight)
        if self.rank_weight < 0 or self.rank_temperature <= 0:
            raise ValueError(f"rank_weight must be >= 0 and rank_temperature > 0, got {self.rank_weight}, {self.rank_temperature}")
        if self.rank_weight and not self.shared_embedding:
            raise ValueError("rank_weight needs shared_embedding (the order loss runs on each group's K frames)")
        if self.shift_pixels < 0:
            raise ValueError(f"shift_pixels must be >= 0, got {self.shift_pixels}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not self.normalize_prediction:
            raise ValueError("normalize_prediction=False is not supported: progress labels are fractions in [0, 1]")
        if self.method not in PRETRAINABLE:
            raise ValueError(f"method must be one of {', '.join(PRETRAINABLE)}, got {self.method!r}")
        self.method_config = dict(self.method_config)
        if self.method_config and self.method == PROGRESSOR:
            raise ValueError("method_config is for the baselines; PROGRESSOR's settings are flags of their own")
        if self.method != PROGRESSOR:
            self.model_config()  # refuse unknown or invalid fields before any work

    def model_config(self) -> Any:
        """The baseline's model config (backbone, image size and ``method_config``); not for PROGRESSOR."""
        try:
            return make_config(self.method, {"backbone": self.backbone, "image_size": self.image_size,
                                             **self.method_config})
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
    ``--method_config``, for ``main.py``). Unset flags take the preset's value."""
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="main.py" if methods else "main_ours.py", argument_default=argparse.SUPPRESS,
        description=("Pretrain a video reward model (PROGRESSOR or a baseline) on expert videos." if methods else
                     "Pretrain the PROGRESSOR progress model on expert videos."),
        epilog="Presets: " + "; ".join(f"{k}: {v or 'the defaults shown'}" for k, v in PRESETS.items()))
    bool_flag = argparse.BooleanOptionalAction
    p.add_argument("--data_path", required=True, help="dataset root (Meta-World demos, EPIC-style frame folders or videos)")
    if methods:
        p.add_argument("--method", choices=PRETRAINABLE, default=PROGRESSOR,
                       help=f"reward method (default {PROGRESSOR}); the PROGRESSOR-only flags (--head, --label_std, "
                            "--negatives, --rank_weight, --shared_embedding, ...) do not apply to the others")
        p.add_argument("--method_config", nargs="+", metavar="KEY=VALUE",
                       help="the baseline's own settings, e.g. margin=0.3 (fields in docs/baselines.md); "
                            "default batch sizes (tuples per step): "
                            + ", ".join(f"{k} {v}" for k, v in METHOD_BATCH_SIZES.items()))
    p.add_argument("--output_dir", help=f"checkpoints, logs, metrics (default {d.output_dir})")
    p.add_argument("--preset", choices=sorted(PRESETS), default="metaworld-cpu", help="named recipe (default metaworld-cpu)")
    p.add_argument("--tasks", nargs="+", help="only these task folders")
    p.add_argument("--cache_dir", help="decoded-frame cache (default <data_path>/.v2r_cache)")
    p.add_argument("--backbone", help=f"{' | '.join(BACKBONES)} (default {d.backbone})")
    p.add_argument("--image_size", type=int, help="model input size (default: the backbone's)")
    p.add_argument("--resize", choices=RESIZES, help="frames of another size: fit = bicubic resize + centre crop; "
                   f"epic = bilinear resize + centre crop, the released EPIC input (default {d.resize})")
    p.add_argument("--head", choices=sorted(HEAD_INPUTS), help="head input: concat = the three features (released layout); "
                   f"distance = + their log distances (default {d.head})")
    p.add_argument("--batch_size", type=int, help=f"triplets per step per process (default {d.batch_size})")
    p.add_argument("--steps", type=int, help=f"optimiser steps (default {d.steps}); overrides --epochs")
    p.add_argument("--time_limit", type=float, help="stop training after this many minutes (then save and evaluate)")
    p.add_argument("--epochs", type=float, help="training length in epochs (one triplet per training frame) when --steps is not given")
    p.add_argument("--lr", type=float, help=f"AdamW learning rate (default {d.lr})")
    p.add_argument("--weight_decay", type=float, help=f"AdamW weight decay (default {d.weight_decay})")
    p.add_argument("--warmup_steps", type=int, help=f"linear warm-up steps (default {d.warmup_steps})")
    p.add_argument("--warmup_epochs", type=float, help="linear warm-up in epochs (used when --warmup_steps is not given)")
    p.add_argument("--lr_schedule", choices=("constant", "cosine"), help=f"after warm-up: constant or cosine decay to 0 at --steps (default {d.lr_schedule})")
    p.add_argument("--grad_clip", type=float, help=f"gradient-norm clip, 0 = off (default {d.grad_clip})")
    p.add_argument("--normalize_prediction", action=bool_flag,
                   help="progress labels are fractions (mid-init)/(goal-init) in [0, 1]; always on, kept for the released flag set")
    p.add_argument("--randomize", action=bool_flag, help=f"randomised triplet endpoints; --no-randomize: first/last frame (default {d.randomize})")
    p.add_argument("--fixed_fraction", type=float, help=f"with --randomize: share of triplets that keep fixed endpoints (default {d.fixed_fraction})")
    p.add_argument("--max_gap", type=int, help="randomised endpoints: goal - init < max_gap")
    p.add_argument("--label_std", help=f"label std: 'delta' = sqrt(1/(goal-init)) or a number such as 0.1 (default {d.label_std})")
    p.add_argument("--sigma_power", type=float, help="weight each triplet's KL by sigma^P (detached, batch mean 1): hard triplets "
                   f"cannot be dodged with a wide sigma; 2 = beta-NLL with beta 1 (default {d.sigma_power}: plain KL)")
    p.add_argument("--rank_weight", type=float, help="shared embedding: add this weight times a pairwise order loss on each group's K "
                   f"frames (first/last frame as endpoints), which asks for time order, what VOC measures "
                   f"(default {RANK_WEIGHT:g} with shared-embedding batches, else 0)")
    p.add_argument("--rank_temperature", type=float, help=f"margin scale of the order loss (default {d.rank_temperature})")
    p.add_argument("--negatives", action=bool_flag, help="add negatives (middle frame from another video, target N(-1, 0.1), weight 0.05)")
    p.add_argument("--negative_weight", type=float, help=f"loss weight of the negatives (default {d.negative_weight})")
    p.add_argument("--augment", action=bool_flag, help=f"augment training frames, see --augmentation (default {d.augment})")
    p.add_argument("--augmentation", choices=sorted(AUGMENTATIONS), help=f"metaworld: photometric + crop 0.8-1; epic: + crop 0.2-1 and flips; crop: crop only; "
                        f"shift: +-N px translation, N = --shift_pixels (default {d.augmentation})")
    p.add_argument("--shift_pixels", type=int, help=f"largest translation of the shift augmentation (default {d.shift_pixels})")
    p.add_argument("--shared_embedding", action=bool_flag, help=f"encode K frames per trajectory once, many triplets from them (default {d.shared_embedding})")
    p.add_argument("--frames_per_traj", type=int, help=f"shared embedding: frames per trajectory K (default {d.frames_per_traj})")
    p.add_argument("--trajs_per_batch", type=int, help=f"shared embedding: trajectories per step (default {d.trajs_per_batch})")
    p.add_argument("--balance_tasks", action=bool_flag, help=f"draw tasks uniformly, then trajectories (default {d.balance_tasks})")
    add_precision_flag(p, default=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, help=f"seed of model init and batch sampling (default {d.seed})")
    p.add_argument("--device", help=f"auto | cpu | cuda | cuda:N (default {d.device})")
    p.add_argument("--num_workers", type=int, help=f"batch-preparing worker processes, 0 = inline (default {d.num_workers})")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's; 1 is faster on a busy CPU)")
    p.add_argument("--eval_every", type=int, help="evaluate on the test split every N steps (default 0: only at the end)")
    p.add_argument("--no_progress_bar", dest="progress_bar", action="store_false", help="no tqdm bars (for log files)")
    p.add_argument("--no_final_eval", dest="final_eval", action="store_false", help="skip the evaluation after training")
    p.add_argument("--save_every", type=int, help="also write checkpoint_<step>.pth every N steps")
    p.add_argument("--keep_last", type=int, help=f"periodic checkpoint_<step>.pth files kept (default {d.keep_last})")
    p.add_argument("--save_minutes", type=float, help="rewrite checkpoint_last.pth every N minutes of training, "
                   f"so a killed run loses at most that much; 0 = off (default {d.save_minutes:g}); "
                   "SIGTERM / Ctrl-C always save")
    p.add_argument("--log_every", type=int, help=f"log interval in steps (default {d.log_every})")
    p.add_argument("--resume", nargs="?", const="auto",
                   help="continue exactly from a checkpoint (no value: <output_dir>/checkpoint_last.pth if it exists)")
    p.add_argument("--distributed", action="store_true", help="DDP; launch with torchrun --nproc_per_node=N")
    p.add_argument("--push_to_hub", metavar="REPO", help="upload checkpoint_last.pth to this Hugging Face repo at the end")
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
    if args.get("method", PROGRESSOR) != PROGRESSOR and "batch_size" not in args:
        values["batch_size"] = METHOD_BATCH_SIZES[args["method"]]
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
