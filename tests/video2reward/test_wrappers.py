import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from video2reward import ProgressModel
from video2reward.wrappers import ProgressorReward, fit_to_model

SIZE = 32  # model input


class DotEnv(gym.Env):
    """A dot moving toward a target in the unit square, rendered as a 40x60 RGB image."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode="rgb_array", max_steps=8):
        self.render_mode = render_mode
        self.max_steps = max_steps
        self.observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.target = np.array([0.8, 0.8])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(0.1, 0.4, size=2)
        self.t = 0
        return self.pos.astype(np.float32), {}

    def step(self, action):
        self.pos = np.clip(self.pos + 0.1 * np.clip(action, -1, 1), 0.0, 1.0)
        self.t += 1
        dist = float(np.linalg.norm(self.pos - self.target))
        return self.pos.astype(np.float32), -dist, dist < 0.05, self.t >= self.max_steps, {"dist": dist}

    def draw(self, pos):
        img = np.zeros((40, 60, 3), np.uint8)
        tx, ty = (self.target * [59, 39]).astype(int)
        img[max(ty - 2, 0):ty + 3, max(tx - 2, 0):tx + 3] = (0, 200, 0)
        x, y = (pos * [59, 39]).astype(int)
        img[max(y - 3, 0):y + 4, max(x - 3, 0):x + 4] = (220, 40, 40)
        return img

    def render(self):
        return self.draw(self.pos) if self.render_mode == "rgb_array" else None


class DotEnvWithGoal(DotEnv):
    def goal_frame(self):
        return self.draw(self.target), True


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ProgressModel("convnet", image_size=SIZE, alpha=0.3)


def goal_image():
    env = DotEnv()
    return env.draw(env.target)


def count_encoded(model, monkeypatch):
    counter = {"frames": 0}
    encode = model.encode

    def counting(frames, *args, **kwargs):
        counter["frames"] += len(frames)
        return encode(frames, *args, **kwargs)
    monkeypatch.setattr(model, "encode", counting)
    return counter


def test_check_env_passes(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "env is wrapped" / "no spec" notices, not failures
        check_env(ProgressorReward(DotEnv(), model, goal=goal_image()))
        check_env(ProgressorReward(DotEnvWithGoal(), model))


def test_reward_matches_model_and_info(model, monkeypatch):
    env = ProgressorReward(DotEnv(), model, goal=goal_image())
    obs, info = env.reset(seed=3)
    init = fit_to_model(env.unwrapped.render(), SIZE).unsqueeze(0)
    goal = fit_to_model(goal_image(), SIZE).unsqueeze(0)
    counter = count_encoded(model, monkeypatch)
    for _ in range(3):
        before = counter["frames"]
        obs, reward, terminated, truncated, info = env.step(np.array([1.0, 1.0], np.float32))
        assert counter["frames"] - before == 1, "a step encodes one frame (init/goal features are cached)"
        current = fit_to_model(env.unwrapped.render(), SIZE).unsqueeze(0)
        dist = model.predict(init, current, goal)
        assert reward == pytest.approx(float(model.reward(init, current, goal)), abs=2e-2)  # bf16 inference
        assert info["progress_mu"] == pytest.approx(float(dist.loc), abs=2e-2)
        assert info["progress_sigma"] == pytest.approx(float(dist.scale), abs=2e-2)
        assert info["env_reward"] == pytest.approx(-info["dist"]) and isinstance(reward, float)


def test_alpha_and_cache_per_episode(model, monkeypatch):
    low = ProgressorReward(DotEnv(), model, goal=goal_image(), alpha=0.0)
    high = ProgressorReward(DotEnv(), model, goal=goal_image(), alpha=2.0)
    for env in (low, high):
        env.reset(seed=1)
    a = np.zeros(2, np.float32)
    _, r_low, *_, info = low.step(a)
    _, r_high, *_ = high.step(a)
    assert r_low == pytest.approx(info["progress_mu"], abs=1e-6)
    assert r_high < r_low
    counter = count_encoded(model, monkeypatch)
    low.reset(seed=2)
    assert counter["frames"] == 2  # init + goal, once per episode


def test_goal_from_env_and_resize(model):
    env = ProgressorReward(DotEnvWithGoal(), model)
    _, info = env.reset(seed=0)
    assert info["goal_expert_success"] is True
    assert env.episode_goal.shape == (3, SIZE, SIZE) and env.episode_goal.dtype == torch.uint8
    torch.testing.assert_close(env.episode_goal, fit_to_model(goal_image(), SIZE))
    # channels-first frames of the model size pass through; others are fitted (shorter side, centre crop)
    chw = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE), dtype=np.uint8)
    assert torch.equal(fit_to_model(chw, SIZE), torch.from_numpy(chw))
    assert fit_to_model(np.zeros((3, 50, 70), np.uint8), SIZE).shape == (3, SIZE, SIZE)
    with pytest.raises(ValueError, match="uint8"):
        fit_to_model(np.zeros((40, 60, 3), np.float32), SIZE)


def test_frame_fn_and_errors(model):
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        ProgressorReward(DotEnv(render_mode=None), model, goal=goal_image())
    with pytest.raises(ValueError, match="needs a goal"):
        ProgressorReward(DotEnv(), model)
    env = ProgressorReward(DotEnv(render_mode=None), model, goal=goal_image(), frame_fn=lambda e: e.unwrapped.draw(e.unwrapped.pos))
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(2, np.float32))
    env.reset(seed=0)
    _, reward, *_ = env.step(np.zeros(2, np.float32))
    assert np.isfinite(reward)


def test_pushback_hook(model):
    calls = []

    def hook(init, frames, goal):
        calls.append((init.shape, frames.shape, goal.shape))

    step_env = ProgressorReward(DotEnv(max_steps=4), model, goal=goal_image(), pushback=hook, pushback_every="step")
    step_env.reset(seed=0)
    for _ in range(3):
        step_env.step(np.zeros(2, np.float32))
    assert calls == [((3, SIZE, SIZE), (1, 3, SIZE, SIZE), (3, SIZE, SIZE))] * 3

    calls.clear()
    env = ProgressorReward(DotEnv(max_steps=4), model, goal=goal_image(), pushback=hook)
    env.reset(seed=0)
    truncated = False
    while not truncated:
        *_, truncated, _ = env.step(np.zeros(2, np.float32))
    assert calls == [((3, SIZE, SIZE), (4, 3, SIZE, SIZE), (3, SIZE, SIZE))]
    env.reset(seed=1)
    env.step(np.zeros(2, np.float32))
    env.step(np.zeros(2, np.float32))
    env.reset(seed=2)  # the episode was cut short: its frames are handed over now
    assert calls[-1][1] == (2, 3, SIZE, SIZE) and len(calls) == 2
    env.step(np.zeros(2, np.float32))
    env.close()
    assert calls[-1][1] == (1, 3, SIZE, SIZE) and len(calls) == 3


def test_toy_env(model):
    envs = pytest.importorskip("drm.envs")
    env = ProgressorReward(envs.make_env("toy-reach", seed=0, image_size=48, episode_length=5), model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env)
    obs, info = env.reset(seed=0)
    assert "goal_expert_success" in info and env.episode_goal.shape == (3, SIZE, SIZE)
    rewards = []
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
        rewards.append(reward)
        assert {"env_reward", "progress_mu", "progress_sigma", "success"} <= set(info)
    assert truncated and np.isfinite(rewards).all()


def test_metaworld_env(model):
    envs = pytest.importorskip("drm.envs")
    pytest.importorskip("metaworld")
    env = ProgressorReward(envs.make_env("reach", seed=0, image_size=48, episode_length=3), model)
    try:
        env.reset(seed=0)
        _, reward, _, truncated, info = env.step(env.unwrapped.expert_action())
        assert np.isfinite(reward) and {"env_reward", "progress_mu", "progress_sigma"} <= set(info)
    finally:
        env.close()
