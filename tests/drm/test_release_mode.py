"""`variant=release`: each behaviour of the released code behind its own key (docs/rl.md), the switch
composing for every task x agent, and a drawer-open run from a checkpoint in the released format."""
import copy
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from drm.config import check_config, config_differences
from drm.envs import TASKS, make_env
from drm.replay_buffer import ReplayBuffer
from drm.workspace import Timers, Workspace
from video2reward import ProgressModel
from video2reward.methods.pushback import PushBackFinetuner, PushBackConfig, saved_optimizer_state
from video2reward.methods.progressor import ProgressReward

from ..video2reward.test_pushback import S, expert_dataset
from .test_config import AGENTS, compose_cfg
from .test_train_mw import ROOT, rows, train

# key -> (ours, release): every key `variant=release` changes, and nothing else
RELEASE_KEYS = {
    "reward.train_mode": (False, True),
    "finetune.expert_batch_size": (32, 256),
    "finetune.replay_batch_size": (32, 256),
    "finetune.agent_frames": ("replay", "update_batch"),
    "finetune.resume_optimizer": (False, True),
    "first_frame": ("reset", "after_first_action"),
    "finetune.crop": ("per_triplet", "per_batch"),
    "finetune.round_label_std": (False, True),
    "nstep": ("schedule", 10),
    "discount": ("schedule", 0.97),
    "reward.relabel": ("window", "paper"),
}


def small_model(seed=0):
    torch.manual_seed(seed)
    return ProgressModel("convnet", image_size=S, amp=False, channels_last=False).eval()


def frames(n, seed):
    return torch.as_tensor(np.random.default_rng(seed).integers(0, 256, (n, 3, S, S), dtype=np.uint8))


def bn_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


# ---------------------------------------------------------------------------- the switch
def test_release_variant_changes_exactly_the_listed_keys():
    ours, release = compose_cfg(), compose_cfg("variant=release")
    saved = OmegaConf.to_container(ours, resolve=True)
    assert sorted(config_differences(saved, release)) == sorted(RELEASE_KEYS)
    for key, (a, b) in RELEASE_KEYS.items():
        assert OmegaConf.select(ours, key) == a and OmegaConf.select(release, key) == b, key
    assert compose_cfg("variant=ours") == ours


def test_each_release_key_is_selectable_alone():
    cfg = compose_cfg("finetune.crop=per_batch")
    assert config_differences(OmegaConf.to_container(compose_cfg(), resolve=True), cfg) == ["finetune.crop"]
    # and a release run can take one behaviour back
    cfg = compose_cfg("variant=release", "reward.train_mode=false")
    assert cfg.reward.train_mode is False and cfg.finetune.crop == "per_batch"


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_release_variant_composes_for_every_task(agent):
    for task in TASKS:
        cfg = compose_cfg(f"task={task}", f"agent={agent}", "variant=release")
        OmegaConf.resolve(cfg)
        check_config(cfg)
        assert cfg.task_name == task and cfg.first_frame == "after_first_action"
        assert cfg.finetune.replay_batch_size == cfg.batch_size  # the agent's own batch, whatever the task's


def test_bad_release_keys_are_named():
    with pytest.raises(ValueError, match="first_frame.*finetune.crop"):
        check_config(compose_cfg("first_frame=later", "finetune.crop=some"))


# ---------------------------------------------------------------------------- (1) train mode
def test_train_mode_reward_calls_move_batchnorm_statistics_only_when_set():
    init, cur, goal = frames(1, 0)[0], frames(3, 1), frames(1, 2)[0]
    for train_mode in (False, True):
        model = small_model()
        before = bn_stats(model)
        rewarder = ProgressReward(model, train_mode=train_mode)
        rewarder.start_episode(init, goal)
        for frame in cur:
            rewarder.step(frame)
        after = bn_stats(model)
        moved = any(not torch.equal(before[k], after[k]) for k in before)
        assert moved is train_mode
        assert not model.training  # the model's own mode is left as it was
    # released: three single-frame BatchNorm updates per step (init, current, goal)
    model = small_model()
    rewarder = ProgressReward(model, train_mode=True)
    rewarder.start_episode(init, goal)
    rewarder.step(cur[0])
    counts = {int(v) for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")}
    assert counts == {3}
    # train mode gives another reward than eval mode on the same frames, and ending it rescores in eval mode
    r_train = rewarder.step(cur[1]).reward
    rewarder.begin_learning()
    assert rewarder.train_mode is False
    frozen = bn_stats(model)
    r_eval = rewarder.step(cur[1]).reward
    assert r_eval != r_train
    assert all(torch.equal(frozen[k], v) for k, v in bn_stats(model).items())
    eval_only = ProgressReward(model)
    eval_only.start_episode(init, goal)
    assert eval_only.step(cur[1]).reward == r_eval


def test_train_mode_survives_the_rewarder_state_dict():
    rewarder = ProgressReward(small_model(), train_mode=True)
    other = ProgressReward(small_model())
    other.load_state_dict(rewarder.state_dict())
    assert other.train_mode is True


# ---------------------------------------------------------------------------- (2) batch composition
def test_refinement_batch_is_expert_plus_agent_batch():
    model = small_model()
    seen = []
    forward = model.forward
    model.forward = lambda i, c, g: seen.append(i.shape[0]) or forward(i, c, g)
    finetuner = PushBackFinetuner(model, expert_dataset(), PushBackConfig(expert_batch_size=7), amp=False)
    finetuner.finetune(frames(5, 0), frames(5, 1), frames(5, 2))
    assert seen == [7 + 5]


# ---------------------------------------------------------------------------- (3) oldest vs newest frame
class _Recorder:
    def finetune(self, init, current, goal, episodes=None, steps=None):
        self.current, self.keys = current, (episodes, steps)
        return {}


def test_pushback_frame_newest_of_a_replay_sample_or_oldest_of_the_update_batch():
    rng = np.random.default_rng(0)
    replay = ReplayBuffer(200, (3, S, S), (2,), frame_stack=3, rng=0)
    for _ in range(2):
        replay.add_first(rng.integers(0, 256, (3, S, S), dtype=np.uint8),
                         goal_frame=rng.integers(0, 256, (3, S, S), dtype=np.uint8))
        for t in range(10):
            replay.add(np.zeros(2, np.float32), rng.integers(0, 256, (3, S, S), dtype=np.uint8), 0.0, False,
                       last=t == 9)
    ws = types.SimpleNamespace(replay=replay, reward=_Recorder(), timers=Timers(),
                               cfg=OmegaConf.create({"finetune": {"replay_batch_size": 4}}))
    meters = types.SimpleNamespace(update=lambda m: None)
    batch = replay.sample(6, 3, 0.9).to_torch("cpu")
    Workspace._finetune(ws, meters, batch)  # released: the update batch, its oldest stacked frame
    assert torch.equal(ws.reward.current, batch.obs[:, :3])
    assert ws.reward.keys == (None, None)  # the oldest stacked frame: not named by its replay step
    twin = copy.deepcopy(replay)  # draws the same separate sample
    Workspace._finetune(ws, meters)  # ours: a separate sample of replay_batch_size, its newest frame
    expected = twin.sample(4, 1, 1.0, window=False)
    assert torch.equal(ws.reward.current, torch.as_tensor(expected.obs[:, -3:]))
    assert not torch.equal(ws.reward.current, torch.as_tensor(expected.obs[:, :3]))
    np.testing.assert_array_equal(ws.reward.keys[0], expected.episode)  # its replay frames, named
    np.testing.assert_array_equal(ws.reward.keys[1], expected.step)


# ---------------------------------------------------------------------------- (4) optimiser state
def test_refinement_optimizer_continues_from_a_saved_state():
    expert = expert_dataset()
    donor = PushBackFinetuner(small_model(), expert, PushBackConfig(expert_batch_size=4), amp=False)
    donor.finetune(frames(4, 0), frames(4, 1), frames(4, 2))
    saved = donor.optimizer.state_dict()
    for key in ("optimizer", "optim_state_dict", "optimizer_state_dict"):  # ours, released MW, released EPIC
        assert saved_optimizer_state({"state_dict": {}, key: saved}) is saved
    assert saved_optimizer_state({"state_dict": {}}) is None

    fresh = PushBackFinetuner(small_model(), expert, PushBackConfig(lr=1e-4, expert_batch_size=4), amp=False)
    continued = PushBackFinetuner(small_model(), expert, PushBackConfig(lr=1e-4, expert_batch_size=4), amp=False)
    continued.load_optimizer_state(saved)
    state = continued.optimizer.state_dict()
    assert state["state"][0]["step"] == saved["state"][0]["step"] == 1
    torch.testing.assert_close(state["state"][0]["exp_avg"], saved["state"][0]["exp_avg"])
    assert continued.optimizer.param_groups[0]["lr"] == 1e-4  # finetune.lr still decides the rate
    assert not fresh.optimizer.state
    with pytest.raises(ValueError, match="does not fit"):
        PushBackFinetuner(ProgressModel("convnet_spatial", image_size=S), expert).load_optimizer_state(saved)


# ---------------------------------------------------------------------------- (5) first frame
def test_goal_rollout_starts_where_the_episode_is_at_the_first_call():
    action = np.array([1.0, -1.0], np.float32)
    env, twin = make_env("toy-reach", seed=0, image_size=S, episode_length=8), make_env(
        "toy-reach", seed=0, image_size=S, episode_length=8)
    env.reset(seed=3)
    at_reset, _ = env.goal_frame()
    env.reset(seed=3)
    _, _, _, _, info = env.step(action)
    after_action, _ = env.goal_frame()
    # by hand: the same first action, then the expert for the remaining 7 steps
    twin.reset(seed=3)
    twin.step(action)
    for _ in range(7):
        _, _, _, _, last = twin.step(twin.expert_action())
    assert np.array_equal(after_action, last["frame"])
    twin.reset(seed=3)
    for _ in range(8):
        _, _, _, _, last = twin.step(twin.expert_action())
    assert np.array_equal(at_reset, last["frame"])


# ---------------------------------------------------------------------------- (6) one crop vs one per triplet
@pytest.mark.parametrize("crop,same", [("per_triplet", False), ("per_batch", True)])
def test_pushback_crop_per_triplet_or_one_for_the_batch(crop, same):
    finetuner = PushBackFinetuner(small_model(), expert_dataset(), PushBackConfig(crop=crop), amp=False)
    triplet = torch.stack([frames(1, i)[0] for i in range(3)])
    agent = triplet[None].repeat(6, 1, 1, 1, 1)
    expert = triplet[None].repeat(4, 1, 1, 1, 1)
    out = finetuner._augment(expert, agent)
    assert out.shape == (10, 3, 3, S, S)
    agent_out = out[4:]
    assert all(torch.equal(agent_out[0], a) for a in agent_out[1:]) is same
    assert not all(torch.equal(out[0], e) for e in out[1:4])  # expert triplets: one crop each, always


# ---------------------------------------------------------------------------- (7) EPIC input
def test_epic_resize_is_torchvision_resize_and_centre_crop():
    from PIL import Image
    from torchvision import transforms

    from video2reward.data import fit_frame
    from video2reward.train import config_from_args

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 456, 3), dtype=np.uint8))
    want = np.asarray(transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224)])(img)).transpose(2, 0, 1)
    assert np.array_equal(fit_frame(img, 224, resize="epic"), want)
    assert not np.array_equal(fit_frame(img, 224), want)  # ours: bicubic fit
    assert config_from_args(["--data_path", "d", "--preset", "epic-release"]).resize == "epic"
    assert config_from_args(["--data_path", "d", "--preset", "epic"]).resize == "fit"


# ---------------------------------------------------------------------------- (8) label std rounding
def test_label_std_rounded_to_three_decimals_only_when_set():
    expert = expert_dataset(length=8)  # delta 7: sqrt(1/7) = 0.37796...
    for rounded in (False, True):
        finetuner = PushBackFinetuner(small_model(), expert, PushBackConfig(round_label_std=rounded), amp=False)
        _, _, std = finetuner.expert_triplets(5)
        want = torch.full((5,), 0.378) if rounded else torch.full((5,), float(np.sqrt(1 / 7)))
        torch.testing.assert_close(std, want)


# ---------------------------------------------------------------------------- end to end
KEYS = json.loads((Path(__file__).resolve().parents[1] / "data" / "upstream_checkpoint_keys.json").read_text())


def released_checkpoint(path):
    """A checkpoint in the released Meta-World format (random weights): ``state_dict`` + a real
    AdamW ``optim_state_dict`` after one step."""
    (name,) = [k for k in KEYS if k.startswith("resnet18_84")]
    g = torch.Generator().manual_seed(1)
    sd = {k: (0.05 * torch.randn(shape, generator=g) if shape else torch.tensor(3)) for k, shape in KEYS[name].items()}
    sd = {k: (v.abs() + 0.1 if k.endswith("running_var") else v) for k, v in sd.items()}
    model = ProgressModel("resnet18_84", channels_last=False)
    model.load_state_dict(sd)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    x = torch.randint(0, 256, (2, 3, 84, 84), dtype=torch.uint8)
    model(x, x, x)[0].sum().backward()
    optimizer.step()
    torch.save({"state_dict": sd, "optim_state_dict": optimizer.state_dict()}, path)


@pytest.mark.slow
def test_release_variant_drawer_open_smoke_from_a_released_checkpoint(tmp_path):
    released_checkpoint(tmp_path / "all_tasks.pth")
    run_dir, out = train(tmp_path, "mw", "variant=release", "task=drawer-open", "agent=drqv2",
                         "num_train_frames=72", "num_seed_frames=48", "eval_every_frames=1000",
                         "num_eval_episodes=1", "episode_length=12", "batch_size=4", "agent.hidden_dim=32",
                         "agent.num_expl_steps=20", "online_finetune_every_step=4", "finetune.expert_batch_size=2",
                         f"reward.checkpoint={tmp_path / 'all_tasks.pth'}", f"exp_data_path={tmp_path / 'demos'}",
                         "demos.num_train=1", "demos.num_test=1", "demos.keep_failures=true", "num_threads=1",
                         "save_video=false", "precision=fp32", cwd=ROOT / "DrM")
    assert "reward model: resnet18_84" in out
    assert "refinement AdamW continues from the state saved in" in out
    evals = rows(run_dir / "eval.csv")
    assert [int(float(r["frame"])) for r in evals] == [0, 72]
    assert any(r.get("refine_expert_loss") for r in rows(run_dir / "train.csv"))
    snap = torch.load(run_dir / "snapshot.pt", weights_only=True)
    assert snap["config"]["first_frame"] == "after_first_action" and snap["config"]["nstep"] == 10
    assert snap["reward"]["train_mode"] is False  # ended at the first agent update
