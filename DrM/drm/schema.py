"""Every key of DrM's configuration, declared once: type, default, checks and a comment each.

``Config`` is the run (``DrM/cfgs/config.yaml`` adds the defaults list: agent, task, variant,
preset); ``DrQV2Config`` / ``DrMConfig`` are the ``agent`` group (``agent=drqv2|drm_mw``). A field's
metadata holds what :func:`drm.config.check_config` checks beyond the type: ``choices``, ``at_least``
(>=), ``above`` (>), ``at_most`` (<=), ``words`` (strings accepted besides the type, with ``kind`` the
type itself when the annotation must be ``Any``), ``pattern`` (a regex and what it stands for), and
``may_change`` (the key may differ between a run and its continuation, :func:`drm.config.check_resume`).
Frames = agent steps x action_repeat (as in DrQ-v2).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from video2reward.methods.progressor import HEAD_INPUTS
from video2reward.model import BACKBONES
from video2reward.precision import PRECISIONS
from video2reward.methods.pushback import CROPS
from video2reward.methods.pushback import PARAMS as FINETUNE_PARAMS
from video2reward.uvd import ADVANCE_RULES, DISTANCES

from .envs import OBS_TYPES, RENDER_QUALITIES, TASKS
from .rewards import RELABEL_MODES, REWARD_FORMS, REWARD_MODELS

# agent frames of a push-back step: the newest frame of a separate replay sample, or the oldest stacked
# frame of the agent's update batch (released); the workspace picks them
AGENT_FRAMES = ("replay", "update_batch")

FIRST_FRAMES = ("reset", "after_first_action")  # the episode's init frame (drm.workspace.Workspace._begin)


SUBGOALS = ("none", "uvd")  # reward.subgoals: the episode's goal frame, or UVD subgoals of the expert's goal rollout


def setting(default: Any, **checks: Any) -> Any:
    """A field with ``default`` and the ``checks`` of the module docstring as its metadata."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=checks)
    return field(default=default, metadata=checks)


@dataclass
class UVDSettings:
    """reward.subgoals=uvd: the expert's goal rollout decomposed into subgoals (docs/baselines.md, section UVD)."""

    gamma: float = setting(0.08, above=0)  # RBF kernel width over frame indices, exp(-gamma dt^2)
    # frames a subgoal must lie before the next one and after the start (UVD: 18 of its videos' frames)
    min_gap: int = setting(18, at_least=0)
    distance: str = setting("l2", choices=DISTANCES)  # embedding distance to the goal: l2 | cosine
    # when a subgoal counts as reached: progress (the model's progress toward it >= threshold) | distance (the
    # embedding distance to it <= (1 - threshold) x the phase start's)
    advance: str = setting("progress", choices=ADVANCE_RULES)
    threshold: float = setting(0.9, above=0, at_most=1)


@dataclass
class RewardConfig:
    """The reward the agent learns from (the model is `reward_model`)."""

    # this default (or a task's): pretrained from exp_data_path when missing or made with other pretrain/demos
    # settings; given on the command line: must exist
    checkpoint: str = "${drm_root:pretrained_reward/all_tasks.pth}"
    # null: only the config files' reward.checkpoint is pretrained when missing; true / false: always / never
    pretrain_if_missing: bool | None = None
    alpha: float = setting(0.4, at_least=0)  # entropy weight: r = mu - alpha * H(N(mu, sigma^2))
    # window: recompute every step of the n-step window with the current model
    # paper: released code (oldest stacked frame, one reward for the whole n-step return)
    # stored: the rewards computed when the step was collected
    relabel: str = setting("window", choices=RELABEL_MODES)
    # true: reward calls use BatchNorm batch statistics and update the running ones until the first agent
    # update (released code); false: eval mode always
    train_mode: bool = False
    # default (the method's own: the value of the new frame; VIP / TCN its change)
    # | value | delta: V(o_{t+1}) - V(o_t), V = mu - alpha * H for PROGRESSOR
    form: str = setting("default", choices=REWARD_FORMS)
    # lam: lam * success added to every step's learned reward (HOLD, TimeRewarder)
    success_bonus: float = setting(0.0, at_least=0)
    # 0: window relabelling exact (values dropped at every model change); B > 0 (needs finetune.params=head):
    # values kept stale, B recomputed per batch, round-robin
    refresh_budget: int = setting(0, at_least=0)
    # none: every step scored against the episode's goal frame | uvd: against the current UVD subgoal of the
    # expert's goal rollout, phases offset so that the reward climbs from one to the next (reward.uvd)
    subgoals: str = setting("none", choices=SUBGOALS)
    uvd: UVDSettings = field(default_factory=UVDSettings)


@dataclass
class FinetuneConfig:
    """Push-back refinement (adversarial online refinement of the reward model)."""

    lr: float = setting(5.0e-5, above=0)  # AdamW
    beta: float = 0.9  # push-back target N(beta * mu, sigma_scale * sigma) on agent frames
    sigma_scale: float = setting(1.0, at_least=0)
    pushback_weight: float = setting(0.01, at_least=0)  # weight of the push-back KL next to the expert KL
    expert_batch_size: int = setting(32, at_least=1)  # expert triplets (fixed endpoints, label std sqrt(1/delta))
    replay_batch_size: int = setting(32, at_least=1)  # agent (init, current, goal) triplets from replay
    # replay: newest frame of a separate replay sample; update_batch: oldest stacked frame of the agent's
    # update batch (released; replay_batch_size is then batch_size)
    agent_frames: str = setting("replay", choices=AGENT_FRAMES)
    crop_scale: list[float] = setting([0.8, 1.0])  # random-resized crop applied to both
    # per_triplet (one crop per triplet) | per_batch (one for the whole batch, released)
    crop: str = setting("per_triplet", choices=CROPS)
    round_label_std: bool = False  # round the expert label std to 3 decimals (released loader)
    # continue AdamW from the checkpoint's saved optimiser state when it has one (released)
    resume_optimizer: bool = False
    clip_grad: float = setting(1.0, at_least=0)
    # all (every weight, as released) | head (the encoder frozen: features are cached for the whole run and a
    # refinement step costs a head pass; preset=state-cpu)
    params: str = setting("all", choices=FINETUNE_PARAMS)


@dataclass
class DemosConfig:
    """Expert demos generated when exp_data_path lacks a task (same camera / render settings as the env)."""

    num_train: int = setting(30, at_least=1)  # trajectories per task
    num_test: int = setting(10, at_least=0)
    seed: int = setting(0, at_least=0)
    keep_failures: bool = False  # keep episodes where the scripted expert failed (default: re-seed them)


@dataclass
class PretrainConfig:
    """Reward pretraining, used only when reward.checkpoint is missing."""

    tasks: list[str] = setting(["door-open", "drawer-open", "hammer", "peg-insert-side", "pick-place",
                                "reach"])  # + the run's task
    # resnet18_84 reproduces the released model (slow on a CPU)
    backbone: str = setting("convnet_spatial", choices=tuple(BACKBONES))
    image_size: int = setting(84, at_least=8)
    steps: int = setting(3000, at_least=1)
    batch_size: int = setting(64, at_least=1)
    lr: float = setting(2.0e-4, above=0)
    # a number, or delta = sqrt(1/(goal-init)) as in the released pretraining
    label_std: Any = setting(0.025, kind=float, above=0, words=("delta",))
    shift_pixels: int = setting(2, at_least=0)  # random-shift augmentation range
    rank_weight: float | None = 100  # weight of the pairwise time-order loss (0: the plain KL objective)
    # head input: distance (+ log feature distances) or concat (the released layout)
    head: str = setting("distance", choices=tuple(HEAD_INPUTS))
    seed: int = setting(0, at_least=0)


@dataclass
class Config:
    """A run of ``python DrM/train_mw.py task=drawer-open agent=drqv2 seed=0``."""

    # ---- environment
    task_name: str = setting(MISSING, choices=TASKS)  # set by task/<name>.yaml
    frame_stack: int = setting(3, at_least=1)  # stacked frames, newest last
    action_repeat: int = setting(2, at_least=1)  # env steps per agent step (reward summed, success = any)
    # agent steps per episode; no terminal states inside an episode
    episode_length: int = setting(100, at_least=1)
    image_size: int = setting(84, at_least=8)  # agent observation size (pixels)
    # fast (no shadows / MSAA, ~6x faster on CPU) | default; must match the demos
    render_quality: str = setting("fast", choices=RENDER_QUALITIES)
    # what the agent sees: pixels (stacked frames, conv encoder) | state (the env's low-dimensional state, MLP
    # encoder); the reward always scores rendered frames
    obs_type: str = setting("pixels", choices=OBS_TYPES)
    # the episode's init frame, and where the expert's goal rollout starts: reset | after_first_action
    # (released code: the frame after the first action)
    first_frame: str = setting("reset", choices=FIRST_FRAMES)

    # ---- training loop
    seed: int = setting(0, at_least=0)
    # auto (cuda if present) | cpu | cuda | cuda:1 ...
    device: str = setting("auto", pattern=(r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, cuda or cuda:N"),
                          may_change=True)
    num_train_frames: int = setting(1100000, at_least=0, may_change=True)  # total env frames
    num_seed_frames: int = setting(4000, at_least=0)  # frames of uniform random actions before updates start
    eval_every_frames: int = setting(10000, at_least=1, may_change=True)
    # deterministic actions; success rate = episodes with any success
    num_eval_episodes: int = setting(10, at_least=0, may_change=True)
    # how often train.csv / TensorBoard get a row
    log_every_frames: int = setting(1000, at_least=1, may_change=True)
    save_video: bool = setting(True, may_change=True)  # eval episode mp4 with reward overlays (first eval episode)
    # run_dir/snapshot.pt, resumed automatically by a rerun in the same dir
    save_snapshot: bool = setting(True, may_change=True)
    snapshot_every_frames: int = setting(50000, at_least=1, may_change=True)
    # auto (bf16 only where the hardware runs it natively, else fp32) | bf16 | fp32
    precision: str = setting("auto", choices=PRECISIONS)
    amp: bool | None = None  # legacy switch, overrides precision: false = fp32, true = bf16
    # torch CPU threads (null: torch's default)
    num_threads: int | None = setting(None, at_least=1, may_change=True)

    # ---- replay and returns
    replay_buffer_size: int = setting(1000000, at_least=2)  # transitions (each frame stored once)
    batch_size: int = setting(256, at_least=1)
    # int, or `schedule`: floor(3 + 7 exp(-t/1e6)), t in agent steps (released code: 10)
    nstep: Any = setting("schedule", kind=int, at_least=1, words=("schedule",))
    # float, or `schedule`: 0.997 - 0.02 exp(-t/5e5) - 0.007 exp(-t/1.6e6) (released: 0.97)
    discount: Any = setting("schedule", kind=float, above=0, at_most=1, words=("schedule",))

    # ---- reward
    # ours (PROGRESSOR) | env (Meta-World dense reward) | sparse (success) | a baseline (docs/baselines.md)
    reward_model: str = setting("ours", choices=REWARD_MODELS)
    reward: RewardConfig = field(default_factory=RewardConfig)
    # demos (<task>/{train,test}/<traj>/<i>.png); generated if missing
    exp_data_path: str = "${drm_root:expert_demos}"

    # ---- push-back refinement (adversarial online refinement of the reward model)
    online_finetune: bool = True
    # agent steps between refinement steps (after the seed phase)
    online_finetune_every_step: int = setting(100, at_least=1)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    demos: DemosConfig = field(default_factory=DemosConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


@dataclass
class DrQV2Config:
    """DrQ-v2 (Yarats et al. 2021): pixel DDPG, n-step returns, random-shift augmentation."""

    _target_: str = "drm.agents.DrQV2Agent"
    obs_shape: Any = MISSING  # filled in by the workspace
    action_shape: Any = MISSING
    device: str = setting("${device}", may_change=True)
    lr: float = setting(1.0e-4, above=0)  # Adam, every network
    feature_dim: int = setting(50, at_least=1)  # Linear -> LayerNorm -> Tanh trunk width
    hidden_dim: int = setting(1024, at_least=1)  # actor / critic MLP width
    critic_target_tau: float = setting(0.01, above=0)  # Polyak rate of the target critic
    # agent steps of uniform random actions (= num_seed_frames / action_repeat)
    num_expl_steps: int = setting(2000, at_least=0)
    update_every_steps: int = setting(2, at_least=1)  # agent steps between updates
    stddev_schedule: Any = "linear(1.0,0.1,500000)"  # exploration std over agent steps (a number: constant)
    stddev_clip: float = setting(0.3, above=0)  # target-policy / actor-update noise bound
    aug_pad: int = setting(4, at_least=0)  # random-shift augmentation padding (pixels)
    state_repr_dim: int = 256  # obs_type=state: width of the MLP state encoder (Linear -> LayerNorm -> ReLU)
    use_drm: bool = False  # DrM's options (agent=drm_mw)


@dataclass
class DrMConfig(DrQV2Config):
    """DrM (Xu et al. 2024) on Meta-World: DrQ-v2 + dormant-ratio-guided exploration and perturbation,
    expectile value target, Dropout + LayerNorm Q heads."""

    _target_: str = "drm.agents.DrMAgent"
    use_drm: bool = True
    dropout: float = 0.01  # Q-head dropout
    expectile: float = 0.9  # value-network expectile
    target_lambda: float = 0.5  # critic target: lambda V(s') + (1 - lambda) min Q'(s', a')
    dormant_threshold: float = 0.025  # neuron dormant when mean |activation| < this x layer mean
    target_dormant_ratio: float = 0.2  # awaken exploration until the actor's dormant ratio falls below this
    dormant_temp: float = 10.0  # awaken std = sigmoid(temp * (dormant - target_dormant_ratio))
    perturb_every: int = 100000  # agent steps between perturbations (0: never)
    perturb_rate: float = 2.0  # p = clip(1 - rate * dormant, min, max)
    min_perturb_factor: float = 0.2
    max_perturb_factor: float = 0.95
    perturb_encoder: bool = False  # perturb Linear layers only, as DrM does


AGENTS = {"drqv2": DrQV2Config, "drm_mw": DrMConfig}  # the agent group: `agent=drm_mw`

# Stored as plain values, not as the typed dataclasses: OmegaConf would reject a bad override while
# composing, in a multi-line Hydra error that stops at the first key, before check_config can name every
# one in a line; and it would store 100 as 100.0, so saved configs of earlier runs would differ.
_store = ConfigStore.instance()
_store.store(name="base_config", node=asdict(Config()))
for _name, _schema in AGENTS.items():
    _store.store(group="agent", name=_name, node=asdict(_schema()))
