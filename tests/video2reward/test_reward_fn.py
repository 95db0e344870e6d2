"""The reward interface (video2reward.reward_fn) with models other than PROGRESSOR: a per-frame value
and a value-difference (VIP-style) reward, online updates, caches, resume, and the Gymnasium wrapper."""
import io
import warnings

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from drm.replay_buffer import ReplayBuffer
from drm.rewards import relabel
from video2reward.reward_fn import EnvReward, FrameReward
from video2reward.wrappers import RewardWrapper

from .test_wrappers import DotEnvWithGoal

S = 16


class RedDistance(torch.nn.Module):
    """Features: mean of each colour channel; value: minus the L1 distance of the current frame's
    features to the goal's. ``offset`` stands for weights an online update changes."""

    reward_kind = "value"
    image_size = S

    def __init__(self):
        super().__init__()
        self.register_buffer("offset", torch.zeros(()))
        self.encoded = 0

    @property
    def device(self):
        return self.offset.device

    def encode(self, frames, batch_size=256):
        self.encoded += len(frames)
        return frames.float().mean((2, 3)) / 255

    def reward_from_features(self, f_init, f_cur, f_goal):
        return -(f_cur - f_goal).abs().sum(-1) + self.offset


class RedDistanceDelta(RedDistance):
    reward_kind = "difference"


class AddOne:
    """An online finetuner: every update adds 1 to the model's value."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def finetune(self, init, current, goal):
        self.calls += 1
        self.model.offset += 1.0
        return {"calls": float(self.calls)}

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def restored_copy(reward, updater_cls):
    """A new ``FrameReward`` on a fresh ``RedDistance`` loaded from ``reward``'s saved state."""
    blob = io.BytesIO()
    torch.save(reward.state_dict(), blob)
    blob.seek(0)
    fresh = RedDistance()
    restored = FrameReward(fresh, updater_cls(fresh))
    restored.load_state_dict(torch.load(blob, weights_only=False))
    return restored


def value(model, frame, goal):
    f = model.encode(torch.stack([torch.as_tensor(frame), torch.as_tensor(goal)]))
    return float(model.reward_from_features(f[:1], f[:1], f[1:]))


def filled_buffer(episodes=3, length=10, seed=0):
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(500, (3, S, S), (2,), frame_stack=3, rng=seed)
    for _ in range(episodes):
        buf.add_first(rng.integers(0, 256, (3, S, S), dtype=np.uint8),
                      goal_frame=rng.integers(0, 256, (3, S, S), dtype=np.uint8))
        for t in range(length):
            buf.add(np.zeros(2, np.float32), rng.integers(0, 256, (3, S, S), dtype=np.uint8), 0.0, False,
                    last=t == length - 1)
    return buf


def frames(n, seed):
    return torch.as_tensor(np.random.default_rng(seed).integers(0, 256, (n, 3, S, S), dtype=np.uint8))


def test_value_reward_steps_and_relabels_with_each_frames_value():
    model = RedDistance()
    reward = FrameReward(model)
    init, goal, cur = frames(1, 0)[0], frames(1, 1)[0], frames(4, 2)
    reward.start_episode(init, goal)
    for frame in cur:
        step = reward.step(frame)
        assert step.reward == pytest.approx(value(model, frame, goal)) and step.progress is None
    batch = filled_buffer().sample(8, nstep=3, discount=0.5).to_torch("cpu")
    per_step = reward.score_batch(batch)
    expected = torch.tensor([[value(model, batch.window_frames[b, i], batch.goal_frame[b]) for i in range(3)]
                             for b in range(8)])
    torch.testing.assert_close(per_step, expected)
    torch.testing.assert_close(relabel(batch, reward).reward.squeeze(1), expected @ torch.tensor([1, 0.5, 0.25]))
    model.encoded = 0
    reward.score_batch(batch)
    assert model.encoded == 0, "frames scored since the last model change are not encoded again"


def test_difference_reward_is_the_change_of_value_and_telescopes():
    model = RedDistanceDelta()
    reward = FrameReward(model)
    init, goal, cur = frames(1, 0)[0], frames(1, 1)[0], frames(5, 2)
    reward.start_episode(init, goal)
    steps = [reward.step(frame).reward for frame in cur]
    assert steps[0] == pytest.approx(value(model, cur[0], goal) - value(model, init, goal))
    assert steps[3] == pytest.approx(value(model, cur[3], goal) - value(model, cur[2], goal))
    assert sum(steps) == pytest.approx(value(model, cur[-1], goal) - value(model, init, goal), abs=1e-5)
    batch = filled_buffer().sample(8, nstep=3, discount=0.9).to_torch("cpu")
    per_step = reward.score_batch(batch)
    window = torch.cat([batch.newest_frame[:, None], batch.window_frames[:]], 1)  # o_t .. o_{t+n}
    values = torch.tensor([[value(model, window[b, i], batch.goal_frame[b]) for i in range(4)] for b in range(8)])
    torch.testing.assert_close(per_step, values[:, 1:] - values[:, :-1])
    with pytest.raises(ValueError, match="difference"):
        FrameReward(model, relabel="paper")


def test_online_update_refreshes_every_cache_and_resumes_exactly():
    model = RedDistance()
    reward = FrameReward(model, AddOne(model))
    assert reward.online and not FrameReward(RedDistance()).online and not EnvReward().online
    assert FrameReward(RedDistance()).finetune(*frames(3, 0)[:, None]) == {}
    init, goal = frames(1, 0)[0], frames(1, 1)[0]
    reward.start_episode(init, goal)
    batch = filled_buffer().sample(8, nstep=2, discount=0.9).to_torch("cpu")
    before_step, before_batch = reward.step(init).reward, reward.score_batch(batch)
    assert reward.finetune(batch.init_frame, batch.newest_frame, batch.goal_frame) == {"calls": 1.0}
    assert reward.step(init).reward == pytest.approx(before_step + 1)
    torch.testing.assert_close(reward.score_batch(batch), before_batch + 1)
    restored = restored_copy(reward, AddOne)
    fresh = restored.model
    assert restored.finetuner.calls == 1 and float(fresh.offset) == 1.0
    fresh.encoded = 0
    torch.testing.assert_close(restored.score_batch(batch), before_batch + 1)
    assert fresh.encoded == 0, "the value cache is part of the state"


@pytest.mark.parametrize("model_cls", [RedDistance, RedDistanceDelta])
def test_wrapper_takes_any_frame_reward(model_cls):
    model = model_cls()
    env = RewardWrapper(DotEnvWithGoal(), FrameReward(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.ones(2, np.float32))
    assert "progress_mu" not in info and "env_reward" in info
    assert np.isfinite(reward)
    with pytest.raises(ValueError, match="scores frames"):
        RewardWrapper(DotEnvWithGoal(), EnvReward())


@pytest.mark.parametrize("method", ["tcn", "vip"])
def test_wrapper_with_baseline_methods_passes_check_env(method):
    from video2reward.methods import build_model
    torch.manual_seed(0)
    model = build_model(method, {"backbone": "convnet", "image_size": 32}).eval()
    env = RewardWrapper(DotEnvWithGoal(), FrameReward(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env)
    env.reset(seed=1)
    rewards = [env.step(np.ones(2, np.float32))[1] for _ in range(3)]
    assert all(np.isfinite(rewards)) and env.reward.name == method


class AddOneHeadOnly(AddOne):
    """An finetuner that changes only what comes after the features (push-back with params="head")."""

    frozen_features = True

    def finetune(self, init, current, goal, agent_features=None):
        self.agent_features = agent_features
        return super().finetune(init, current, goal)


def test_a_frozen_encoder_keeps_features_across_updates_and_resumes_with_them():
    model = RedDistance()
    reward = FrameReward(model, AddOneHeadOnly(model))
    assert reward.keeps_features and not FrameReward(model, AddOne(model)).keeps_features
    reward.start_episode(frames(1, 0)[0], frames(1, 1)[0])
    buf = filled_buffer(episodes=6)
    batch = buf.sample(8, nstep=3, discount=0.9).to_torch("cpu")
    before = reward.score_batch(batch)
    reward.finetune(batch.init_frame, batch.newest_frame, batch.goal_frame)
    model.encoded = 0
    after = reward.score_batch(batch)
    torch.testing.assert_close(after, before + 1)  # new values, from the features kept since
    assert model.encoded == 0, "an update that leaves the encoder alone does not cost a re-encode"
    other = buf.sample(32, nstep=3, discount=0.9).to_torch("cpu")
    expected = torch.tensor([[value(model, other.window_frames[b, i], other.goal_frame[b]) for i in range(3)]
                             for b in range(32)])
    model.encoded = 0
    torch.testing.assert_close(reward.score_batch(other), expected)
    assert model.encoded > 0, "frames not seen before are encoded"
    restored = restored_copy(reward, AddOneHeadOnly)
    fresh = restored.model
    restored.finetune(batch.init_frame, batch.newest_frame, batch.goal_frame)  # drops values, keeps features
    fresh.encoded = 0
    torch.testing.assert_close(restored.score_batch(batch), before + 2)
    assert fresh.encoded == 0, "the feature cache is part of the state"


def test_a_frozen_encoder_hands_its_kept_features_to_the_updater():
    model = RedDistance()
    finetuner = AddOneHeadOnly(model)
    reward = FrameReward(model, finetuner)
    buf = filled_buffer(episodes=6)
    batch = buf.sample(8, nstep=3, discount=0.9).to_torch("cpu")
    reward.score_batch(batch)  # keeps the window frames' features and the episodes' endpoints
    refine = buf.sample(16, nstep=1, discount=1.0, window=False).to_torch("cpu")
    model.encoded = 0
    reward.finetune(refine.init_frame, refine.newest_frame, refine.goal_frame, refine.episode, refine.step)
    encoded = model.encoded
    expected = torch.stack([model.encode(x) for x in (refine.init_frame, refine.newest_frame, refine.goal_frame)], 1)
    torch.testing.assert_close(finetuner.agent_features, expected)
    kept = {(int(e), int(t) + i) for e, t in zip(batch.episode, batch.step) for i in (1, 2, 3)}
    new_frames = {(int(e), int(t)) for e, t in zip(refine.episode, refine.step)} - kept
    new_episodes = {int(e) for e in refine.episode} - {int(e) for e in batch.episode}
    assert encoded == len(new_frames) + 2 * len(new_episodes) < 3 * 16, "what was kept is not encoded again"
    reward.finetune(refine.init_frame, refine.newest_frame, refine.goal_frame)  # no keys: the finetuner encodes
    assert finetuner.agent_features is None


def test_a_frozen_encoder_keeps_what_step_computed_for_the_replay_frame():
    model = RedDistance()
    reward = FrameReward(model, AddOneHeadOnly(model))
    buf = ReplayBuffer(200, (3, S, S), (2,), frame_stack=3, rng=0)
    init, goal, clip = frames(1, 0)[0], frames(1, 1)[0], frames(6, 2)
    reward.start_episode(init, goal)
    assert buf.add_first(init.numpy(), goal_frame=goal.numpy()) == (0, 0)
    stepped = []
    for t, frame in enumerate(clip):
        stepped.append(reward.step(frame).reward)
        key = buf.add(np.zeros(2, np.float32), frame.numpy(), 0.0, False, last=t == len(clip) - 1)
        assert key == (0, t + 1)
        reward.keep(*key)
    batch = buf.sample(16, nstep=3, discount=0.9).to_torch("cpu")
    model.encoded = 0
    per_step = reward.score_batch(batch)
    assert model.encoded == 0, "frames scored at collection are neither encoded nor gathered again"
    expected = torch.tensor([[stepped[int(t) + i] for i in range(3)] for t in batch.step])
    torch.testing.assert_close(per_step, expected)
    reward.finetune(None, None, None)  # the head changes: the kept values go, the kept features stay
    torch.testing.assert_close(reward.score_batch(batch), expected + 1)
    assert model.encoded == 0
    plain = FrameReward(RedDistance(), AddOne(RedDistance()))  # an encoder that changes keeps nothing
    plain.start_episode(init, goal)
    plain.step(clip[0])
    plain.keep(0, 1)
    assert len(plain._frame_features) == 0 and len(plain._values) == 0
