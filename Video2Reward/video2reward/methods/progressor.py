"""PROGRESSOR: a Gaussian over task progress from (initial, current, goal) frames, a member of the
method contract (:mod:`.base`) like the baselines.

``E(o_i, o_j, o_g) = N(mu, sigma^2)``: the shared frame encoder gives each frame a 128-d unit
feature, the three features are concatenated (384-d) and scaled by 16, two residual MLP blocks
project them to 256-d and two linear heads give ``mu`` and an unconstrained ``s`` with
``sigma = softplus(s; beta=0.693)``. The reward is ``mu - alpha * H(N(mu, sigma^2))``.

Pretraining draws :class:`~video2reward.triplets.TripletBatch` es (labels: ``N((j-i)/(g-i), s^2)``)
and minimises the KL loss (+ negatives, + the order loss) with :func:`train_step`, reading the
method's own :class:`ProgressorTraining`. During RL its reward function is :class:`ProgressReward`
and its online fine-tuning is push-back (:class:`~.pushback.PushBackFinetuner`).
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from ..data import VideoDataset
from ..flags import setting
from ..losses import NEGATIVE_WEIGHT, gaussian_entropy, negative_kl_loss, progress_kl_loss, ranking_loss
from ..negatives import MADE_KINDS, STORED_KINDS, TARGETS, NegativeSet, negative_losses
from ..model import BACKBONES, FEATURE_SCALE, ResidualBlock, autocast
from ..reward_fn import FrameReward, StepReward, TrajectoryScores, as_frames
from ..triplets import LabelStd, TripletBatch, TripletSampler, parse_label_std
from .base import MethodConfig, Pretraining, RewardModel, Sampling, optimizer_step
from .pushback import PushBackFinetuner

SIGMA_BETA = 0.693  # softplus sharpness of the std head
DISTANCE_EPS = 0.01  # "distance" head: log(sqrt(d^2 + eps^2)), so equal frames give a finite log(eps)
RANK_WEIGHT = 100.0  # default weight of the order loss (shared-embedding batches); see docs/video2reward.md

# What the head's MLP sees, and its width. "concat": the three unit features side by side (the
# released models). "distance": the same + the log feature distances current-goal, current-init and
# init-goal, so nearly equal frames (a hand hovering at the goal) stay far apart on the log scale.
HEAD_INPUTS: dict[str, int] = {"concat": 3 * 128, "distance": 3 * 128 + 3}


@dataclass
class ProgressorConfig(MethodConfig):
    """Everything needed to rebuild a :class:`ProgressModel`; saved beside the weights."""

    method: str = "progressor"
    alpha: float = 0.4  # entropy weight of the reward
    proj_hidden: int | None = None  # width of the first residual block (default: the backbone's)
    head: str = "concat"  # head input: a key of HEAD_INPUTS ("concat" is the released layout)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head not in HEAD_INPUTS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {sorted(HEAD_INPUTS)}")
        self.proj_hidden = int(self.proj_hidden or BACKBONES[self.backbone].proj_hidden)
        self.alpha = float(self.alpha)


ModelConfig = ProgressorConfig  # the name the released-code users know


@dataclass
class ProgressorTraining:
    """PROGRESSOR's own pretraining settings: its triplets and its loss. They are flags of the
    pretraining command (:class:`~video2reward.config.TrainConfig` inherits them), so each is
    declared here once, with its flag's help."""

    head: str = setting("distance", "head input: concat = the three features (released layout); distance = + their "
                                    "log distances", choices=tuple(sorted(HEAD_INPUTS)))
    randomize: bool = setting(True, "randomised triplet endpoints; --no-randomize: first/last frame")
    fixed_fraction: float = setting(0.0, "with --randomize: share of triplets that keep fixed endpoints")
    max_gap: int | None = setting(None, "randomised endpoints: goal - init < max_gap (default: the whole trajectory)")
    label_std: LabelStd = setting(0.025, "label std: 'delta' = sqrt(1/(goal-init)) or a number such as 0.1")
    sigma_power: float = setting(0.0, "weight each triplet's KL by sigma^P (detached, batch mean 1): hard triplets "
                                      "cannot be dodged with a wide sigma; 2 = beta-NLL with beta 1, 0 = plain KL")
    rank_weight: float | None = setting(None, "shared embedding: add this weight times a pairwise order loss on each "
                                              "group's K frames (first/last frame as endpoints), which asks for time "
                                              f"order, what VOC measures (default {RANK_WEIGHT:g} with shared-embedding "
                                              "batches, else 0)")
    rank_temperature: float = setting(0.02, "margin scale of the order loss (progress units)")
    negatives: bool | str = setting(False, "--negatives alone: middle frames from another video, target N(-1, 0.1) "
                                           "(the EPIC recipe); --negatives DIR: the generated negatives in DIR "
                                           "(scripts/generate_negatives.py) and those made from the expert videos, with "
                                           "the frame-level and preference losses below (video2reward.negatives)",
                                    nargs="?", const=True, metavar="DIR")
    negative_weight: float = setting(NEGATIVE_WEIGHT, "loss weight of the other-video negatives (--negatives alone)")
    negative_kinds: list[str] | None = setting(None, "--negatives DIR: only these kinds (default: every kind found "
                                                     "or made: " + " ".join([*STORED_KINDS, *MADE_KINDS]) + ")")
    negative_trajs: int = setting(8, "--negatives DIR: negative trajectories per step (each with its placement's "
                                     "expert)")
    negative_frames: int = setting(8, "--negatives DIR: frames of each negative and expert trajectory per step")
    negative_target: str = setting("pushback", "--negatives DIR: the frame-level target on not-progress kinds' "
                                               "frames: pushback = N(beta * mu, sigma) detached, low = N(0, 0.1^2)",
                                   choices=TARGETS)
    negative_beta: float = setting(0.5, "--negatives DIR: beta of the pushback target")
    negative_frame_weight: float = setting(1.0, "--negatives DIR: weight of the frame-level loss")
    preference_weight: float = setting(1.0, "--negatives DIR: weight of the Bradley-Terry preference loss on "
                                            "trajectories' mean mu (expert > noise 0.3 > noise 1.0, rewound > "
                                            "random, parked, reversed, other task)")
    preference_temperature: float = setting(0.1, "--negatives DIR: scale of the preference logit (progress units)")
    shared_embedding: bool = setting(True, "encode K frames per trajectory once, many triplets from them")
    frames_per_traj: int = setting(16, "shared embedding: frames per trajectory K")
    trajs_per_batch: int = setting(16, "shared embedding: trajectories per step (batch_size triplets spread over them)")

    def __post_init__(self) -> None:
        self.label_std = parse_label_std(self.label_std)
        if self.head not in HEAD_INPUTS:
            raise ValueError(f"head must be one of {', '.join(HEAD_INPUTS)}, got {self.head!r}")
        for name, low in (("frames_per_traj", 2), ("trajs_per_batch", 1), ("max_gap", 2)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < low):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0 <= self.fixed_fraction <= 1:
            raise ValueError(f"fixed_fraction must be in [0, 1], got {self.fixed_fraction}")
        if self.sigma_power < 0:
            raise ValueError(f"sigma_power must be >= 0, got {self.sigma_power}")
        for name in ("negative_weight", "negative_frame_weight", "preference_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.negative_target not in TARGETS:
            raise ValueError(f"negative_target must be one of {', '.join(TARGETS)}, got {self.negative_target!r}")
        for name in ("negative_trajs", "negative_frames"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {getattr(self, name)!r}")
        if not self.preference_temperature > 0:
            raise ValueError(f"preference_temperature must be > 0, got {self.preference_temperature!r}")
        if self.rank_weight is None:
            self.rank_weight = RANK_WEIGHT if self.shared_embedding else 0.0
        self.rank_weight = float(self.rank_weight)
        if self.rank_weight < 0 or not self.rank_temperature > 0:
            raise ValueError(f"rank_weight must be >= 0 and rank_temperature > 0, got {self.rank_weight}, {self.rank_temperature}")
        if self.rank_weight and not self.shared_embedding:
            raise ValueError("rank_weight needs shared_embedding (the order loss runs on each group's K frames)")


def log_distance(a: torch.Tensor, b: torch.Tensor, eps: float = DISTANCE_EPS) -> torch.Tensor:
    """``(B, 1)`` smooth log Euclidean distance ``0.5 ln(|a - b|^2 + eps^2)`` (finite gradient at a == b)."""
    return 0.5 * torch.log((a - b).square().sum(-1, keepdim=True) + eps * eps)


# ------------------------------------------------------------------------------------ the RL reward
class ProgressReward(FrameReward):
    """PROGRESSOR: ``mu - alpha * H(N(mu, sigma^2))``, reporting ``mu`` and ``sigma`` at every step.

    ``train_mode`` (the released code, ``reward.train_mode``): until :meth:`begin_learning`,
    :meth:`step` runs the model in train mode, BatchNorm normalising each frame with its own
    statistics and updating the running ones, and encodes the init, current and goal frames one at a
    time at every step (nothing cached).
    """

    name = "ours"

    def __init__(self, model: "ProgressModel", alpha: float | None = None, finetuner: Any = None,
                 relabel: str = "window", train_mode: bool = False, **options: Any) -> None:
        options.pop("name", None)  # always "ours" (the DrM reward_model name)
        super().__init__(model, finetuner, relabel, name="ours", **options)
        if train_mode and self.kind == "difference":
            raise ValueError("train_mode (the released scoring) gives absolute rewards; form=delta needs train_mode=False")
        if train_mode and self.subgoals is not None:
            raise ValueError("train_mode (the released scoring) encodes the episode's init and goal frames at every "
                             "step; subgoals need train_mode=False")
        self.alpha = model.alpha if alpha is None else float(alpha)
        self.train_mode = bool(train_mode)

    def values(self, f_init, f_cur, f_goal) -> torch.Tensor:
        return self.model.reward_from_features(f_init, f_cur, f_goal, self.alpha)

    def _step_scores(self, f_cur: torch.Tensor) -> StepReward:
        dist = self.model.predict_from_features(self._f_init, f_cur, self._f_goal)
        return StepReward(float(self.model.reward_from_normal(dist, self.alpha)[0]), float(dist.loc[0]),
                          float(dist.scale[0]))

    def score_features(self, f_init, f_cur, f_goal) -> TrajectoryScores:
        dist = self.model.predict_from_features(f_init, f_cur, f_goal)
        mu, sigma = dist.loc.float().cpu().numpy(), dist.scale.float().cpu().numpy()
        value = self.model.reward_from_normal(dist, self.alpha).float().cpu().numpy()  # mu - alpha * H
        return TrajectoryScores(mu, self._rewards_of(value), mu, sigma)

    def start_episode(self, init_frame, goal_frame) -> None:
        if not self.train_mode:
            return super().start_episode(init_frame, goal_frame)
        self._endpoints = (as_frames(init_frame), as_frames(goal_frame))  # encoded at every step instead

    def step(self, frame, env_reward: float = 0.0, success: bool = False) -> StepReward:
        if not self.train_mode or self._endpoints is None:
            return super().step(frame, env_reward, success)
        self._pending = None  # train-mode features are not the eval-mode ones relabelling uses
        init, goal = self._endpoints
        f_init, f_cur, f_goal = (self._train_mode_features(x) for x in (init, as_frames(frame), goal))
        dist = self.model.predict_from_features(f_init, f_cur, f_goal)
        reward = float(self.model.reward_from_normal(dist, self.alpha)[0]) + self.success_bonus * bool(success)
        return StepReward(reward, float(dist.loc[0]), float(dist.scale[0]))

    def _train_mode_features(self, frame: torch.Tensor) -> torch.Tensor:
        """Features of one frame ``(1, 3, S, S)`` in train mode (BatchNorm running stats updated)."""
        was_training = self.model.training
        self.model.train()
        try:
            with torch.no_grad(), autocast(self.model.device, self.model.amp):
                return self.model.features(frame)
        finally:
            self.model.train(was_training)

    def begin_learning(self) -> None:
        """Score in eval mode from now on (the released code's first agent update); the running
        statistics moved, so every cache is rebuilt."""
        if self.train_mode:
            self.train_mode = False
            self.refresh()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "train_mode": self.train_mode}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.train_mode = bool(state.get("train_mode", False))


class ProgressModel(RewardModel):
    """PROGRESSOR's model: the shared frame encoder and a Gaussian head over progress.

    Module names (``model``, ``proj.0``, ``proj.1``, ``fc_mu``, ``fc_log_var``) match the released
    checkpoints, which load with ``strict=True``. ``fc_log_var`` is not a log-variance: it gives the
    pre-softplus ``s``. Inference methods (:meth:`encode`, :meth:`predict`, :meth:`reward`, ...) run
    in eval mode without gradients; :meth:`forward` and :meth:`features` are for training.
    """

    method = "progressor"
    config_class = ProgressorConfig
    training_class = ProgressorTraining
    finetuner_class = PushBackFinetuner
    reward_class = ProgressReward
    predicts_progress = True

    def __init__(self, backbone: str = "resnet18_84", image_size: int | None = None, alpha: float = 0.4,
                 proj_hidden: int | None = None, head: str = "concat", amp: bool = False,
                 channels_last: bool = True) -> None:
        super().__init__(ProgressorConfig(backbone=backbone, image_size=image_size, alpha=alpha,
                                          proj_hidden=proj_hidden, head=head), amp, channels_last)
        hidden = self.config.proj_hidden
        self.proj = nn.ModuleList([ResidualBlock(HEAD_INPUTS[self.config.head], hidden), ResidualBlock(hidden, 256)])
        self.fc_mu = nn.Linear(256, 1)
        self.fc_log_var = nn.Linear(256, 1)

    @classmethod
    def from_config(cls, config: dict | ProgressorConfig, **kwargs: Any) -> "ProgressModel":
        fields = asdict(config) if isinstance(config, ProgressorConfig) else dict(config)
        if fields.pop("method", cls.method) != cls.method:
            raise ValueError(f"config is for method {config['method']!r}, not {cls.method!r}")
        return cls(**fields, **kwargs)

    @property
    def alpha(self) -> float:
        return self.config.alpha

    # ------------------------------------------------------------------ training path
    def head_parameters(self) -> list[nn.Parameter]:
        """The weights after the frame encoder (what :meth:`head` uses): fine-tuned alone, they leave
        every frame's features unchanged."""
        return [*self.proj.parameters(), *self.fc_mu.parameters(), *self.fc_log_var.parameters()]

    def head(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(B, 128)`` x 3 -> ``(mu, sigma)``, each ``(B,)`` float32."""
        # The head is tiny and precision-sensitive (softplus std): always fp32, even under autocast.
        with autocast(self.device, enabled=False):
            f_init, f_cur, f_goal = f_init.float(), f_cur.float(), f_goal.float()
            parts = [f_init * FEATURE_SCALE, f_cur * FEATURE_SCALE, f_goal * FEATURE_SCALE]
            if self.config.head == "distance":
                parts += [log_distance(f_cur, f_goal), log_distance(f_cur, f_init), log_distance(f_init, f_goal)]
            x = torch.cat(parts, dim=-1)
            for block in self.proj:
                x = block(x)
            mu = self.fc_mu(x).squeeze(-1)
            sigma = F.softplus(self.fc_log_var(x).squeeze(-1), beta=SIGMA_BETA)
        return mu, sigma.clamp_min(1e-6)

    def forward(self, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: the three frame batches are encoded in one backbone call."""
        b = init.shape[0]
        f = self.features(torch.cat([init, current, goal], dim=0))
        return self.head(f[:b], f[b:2 * b], f[2 * b:])

    def pretraining(self, dataset: VideoDataset, sampling: Sampling, settings: ProgressorTraining) -> Pretraining:
        s = settings
        args = (dataset, sampling.batch_size, s.randomize, s.max_gap, s.label_std, s.shared_embedding, s.frames_per_traj,
                s.trajs_per_batch, sampling.balance_tasks, sampling.seed, s.fixed_fraction)
        if isinstance(s.negatives, str):  # generated negatives: every batch carries a NegativeBatch too
            negatives = NegativeSet(dataset, s.negatives, s.negative_kinds)
            print(f"[video2reward] negatives: {negatives}", flush=True)
            sampler = NegativeTripletSampler(negatives, s.negative_trajs, s.negative_frames, *args)
        else:
            sampler = TripletSampler(*args)
        return Pretraining(ProgressObjective(self), sampler, functools.partial(train_step, settings=s), "triplets",
                           "shared-embedding" if s.shared_embedding else "per-triplet", find_unused_parameters=False)

    # ------------------------------------------------------------------ inference path
    def predict_from_features(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor) -> Normal:
        """The cheap head on cached features; batch shape ``(B,)``. Single features broadcast."""
        f_init, f_cur, f_goal = torch.broadcast_tensors(f_init, f_cur, f_goal)
        with self.inference():
            mu, sigma = self.head(f_init, f_cur, f_goal)
        return Normal(mu, sigma)

    def predict(self, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor) -> Normal:
        """``N(mu, sigma^2)`` over progress for uint8 frame batches ``(B, 3, S, S)``; batch shape ``(B,)``."""
        if not (init.shape[0] == current.shape[0] == goal.shape[0]):
            raise ValueError(f"init/current/goal batch sizes differ: {init.shape[0]}, {current.shape[0]}, {goal.shape[0]}")
        b = init.shape[0]
        f = self.encode(torch.cat([init, current, goal], dim=0))
        return self.predict_from_features(f[:b], f[b:2 * b], f[2 * b:])

    def reward_from_normal(self, dist: Normal, alpha: float | None = None) -> torch.Tensor:
        """``mu - alpha * H``; ``alpha`` defaults to the model's configured value."""
        alpha = self.alpha if alpha is None else float(alpha)
        return dist.loc - alpha * gaussian_entropy(dist.scale)

    def value(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor) -> torch.Tensor:
        mu, sigma = self.head(f_init, f_cur, f_goal)
        return self.reward_from_normal(Normal(mu, sigma))

    def reward(self, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
        """PROGRESSOR reward ``(B,)`` for uint8 frame batches."""
        return self.reward_from_normal(self.predict(init, current, goal), alpha)

    def reward_from_features(self, f_init: torch.Tensor, f_cur: torch.Tensor, f_goal: torch.Tensor,
                             alpha: float | None = None) -> torch.Tensor:
        return self.reward_from_normal(self.predict_from_features(f_init, f_cur, f_goal), alpha)


# ------------------------------------------------------------------------------------ pretraining
class ProgressObjective(nn.Module):
    """Wraps the model so one ``forward`` (what DDP hooks) encodes all frames once and runs the head
    on index triplets into them."""

    def __init__(self, model: ProgressModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, init: torch.Tensor, current: torch.Tensor, goal: torch.Tensor,
                rows: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """``(mu, sigma)`` of the triplets; with ``rows`` ``(R, K + 1, 3, S, S)`` (a
        :class:`~video2reward.negatives.NegativeBatch`'s frames, encoded in the same backbone call)
        also ``(mu, sigma)`` ``(R, K)`` of each row's frames against its first frame and its goal."""
        if rows is None:
            f = self.model.features(frames)
            return self.model.head(f[init], f[current], f[goal])
        r, k1 = rows.shape[:2]
        f = self.model.features(torch.cat([frames, rows.flatten(0, 1)]))
        f_rows = f[len(frames):].view(r, k1, -1)
        k = k1 - 1
        mu_r, sigma_r = self.model.head(f_rows[:, :1].expand(-1, k, -1).flatten(0, 1), f_rows[:, :k].flatten(0, 1),
                                        f_rows[:, k:].expand(-1, k, -1).flatten(0, 1))
        return (*self.model.head(f[init], f[current], f[goal]), mu_r.view(r, k), sigma_r.view(r, k))


class NegativeTripletSampler(TripletSampler):
    """A :class:`~video2reward.triplets.TripletSampler` whose batches also carry ``n`` negatives of
    ``k`` frames (:class:`~video2reward.negatives.NegativeBatch`), drawn after the triplets from the
    same generator, so a batch stays a pure function of ``(seed, rank, step)``."""

    def __init__(self, negatives: NegativeSet, n: int, k: int, *args: Any) -> None:
        super().__init__(*args)
        self.negatives, self.n, self.k = negatives, int(n), int(k)

    def sample(self, generator: torch.Generator | None = None) -> TripletBatch:
        batch = super().sample(generator)
        return batch._replace(negatives=self.negatives.sample(self.n, self.k, generator))


def train_step(objective: nn.Module, optimizer: torch.optim.Optimizer, batch: TripletBatch, device: torch.device,
               amp: bool = False, grad_clip: float = 0.0, *, settings: ProgressorTraining) -> dict[str, float]:
    """One AdamW step on a (prepared) batch, under bf16 autocast if ``amp``; returns scalar metrics.
    The loss: the KL to the labels, + ``negative_weight`` x the negatives' KL, + ``rank_weight`` x
    the order loss, + the generated negatives' frame-level and preference losses, as ``settings`` asks."""
    s = settings
    batch = batch.to(device)
    b = batch.init.shape[0]
    init, current, goal = batch.init, batch.current, batch.goal
    other_video = s.negatives is True  # --negatives alone: the EPIC recipe's other-video middle frames
    if other_video:
        init, current, goal = torch.cat([init, init]), torch.cat([current, batch.negative]), torch.cat([goal, goal])
    n = init.shape[0]
    if s.rank_weight:  # every frame of a group between the group's first and last frame
        g, k = batch.frames.shape[:2]
        first = (torch.arange(g, device=device) * k).repeat_interleave(k)
        init = torch.cat([init, first])
        current = torch.cat([current, torch.arange(g * k, device=device)])
        goal = torch.cat([goal, first + k - 1])
    objective.train()
    neg = batch.negatives
    with autocast(device, amp):
        mu, sigma, *rows = objective(batch.flat_frames, init, current, goal, None if neg is None else neg.frames)
    loss = progress_kl_loss(mu[:b], sigma[:b], batch.label_mean, batch.label_std, s.sigma_power)
    kl = progress_kl_loss(mu[:b].detach(), sigma[:b].detach(), batch.label_mean, batch.label_std) \
        if s.sigma_power else loss
    metrics = {}
    if other_video:
        kl_neg = negative_kl_loss(mu[b:n], sigma[b:n])
        loss = loss + s.negative_weight * kl_neg
        metrics["kl_negative"] = kl_neg.item()
    if s.rank_weight:
        rank = ranking_loss(mu[n:].view(g, k), s.rank_temperature)
        loss = loss + s.rank_weight * rank
        metrics["rank"] = rank.item()
    if neg is not None:
        frame_loss, preference = negative_losses(*rows, neg, s.negative_target, s.negative_beta,
                                                 s.preference_temperature)
        loss = loss + s.negative_frame_weight * frame_loss + s.preference_weight * preference
        metrics.update(negative_frames=frame_loss.item(), preference=preference.item(),
                       mu_not_progress=rows[0][:len(neg.quality), 1:][neg.not_progress].float().mean().item()
                       if bool(neg.not_progress.any()) else float("nan"))
    grad_norm = optimizer_step(optimizer, loss, grad_clip)
    with torch.no_grad():
        mae = (mu[:b].detach().float() - batch.label_mean).abs().mean().item()
    metrics.update(loss=loss.item(), kl=kl.item(), mae=mae, sigma=sigma[:b].detach().float().mean().item(),
                   grad_norm=grad_norm)
    return metrics




__all__ = ["DISTANCE_EPS", "HEAD_INPUTS", "ModelConfig", "ProgressModel", "ProgressObjective", "ProgressReward",
           "ProgressorConfig", "ProgressorTraining", "RANK_WEIGHT", "SIGMA_BETA", "log_distance", "train_step"]
