"""toy-reach: same interface as Meta-World, numpy rendering, solvable by its expert."""
import numpy as np
import pytest

from drm.envs import TASKS, ToyReachEnv, make_env


def test_interface_matches_the_metaworld_env():
    assert "toy-reach" in TASKS
    env = make_env("toy-reach", seed=0, image_size=64, episode_length=50, frame_stack=3)
    assert isinstance(env, ToyReachEnv)
    assert env.observation_space.shape == (9, 64, 64) and env.observation_space.dtype == np.uint8
    assert env.action_space.shape == (2,) and env.action_space.dtype == np.float32
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["frame"].shape == (3, 64, 64) and info["success"] is False and info["env_reward"] == 0.0
    assert env.render().shape == (64, 64, 3)
    desc = env.describe()
    assert desc["task"] == "toy-reach" and desc["image_size"] == 64 and desc["renderer"] == "numpy"


def test_seeded_resets_reproduce_frames():
    a, b = make_env("toy-reach", seed=0), make_env("toy-reach", seed=99)
    np.testing.assert_array_equal(a.reset(seed=7)[0], b.reset(seed=7)[0])
    np.testing.assert_array_equal(a.placement, b.placement)
    assert not np.array_equal(a.reset(seed=8)[0], b.reset(seed=7)[0])


def test_frame_is_upright_agent_and_goal_where_expected():
    env = make_env("toy-reach", seed=0, image_size=84)
    env.reset(options={"placement": [0.2, 0.8, 0.8, 0.2]})  # agent top-left, goal bottom-right
    img = env.render().astype(int)
    red = (img[..., 0] > 200) & (img[..., 1] < 100)
    green = (img[..., 1] > 180) & (img[..., 0] < 100)
    rows, cols = np.nonzero(red)
    assert abs(rows.mean() - 0.2 * 84) < 1.5 and abs(cols.mean() - 0.2 * 84) < 1.5
    rows, cols = np.nonzero(green)
    assert abs(rows.mean() - 0.8 * 84) < 1.5 and abs(cols.mean() - 0.8 * 84) < 1.5


def test_fast_expert_reaches_the_goal_quickly():
    env = ToyReachEnv(seed=0, episode_length=50, expert="fast", goal="random")
    steps = []
    for seed in range(20):
        env.reset(seed=seed)
        for t in range(1, 51):
            *_, info = env.step(env.expert_action())
            if info["success"]:
                steps.append(t)
                break
    assert len(steps) == 20
    assert 6 <= np.mean(steps) <= 15 and max(steps) <= 15


def test_steady_expert_covers_the_distance_evenly_and_arrives_at_the_last_step():
    env = make_env("toy-reach", seed=0, episode_length=30)
    for seed in range(10):
        env.reset(seed=seed)
        d0 = np.linalg.norm(env.goal_position - env.position)
        distances, successes = [], []
        for _ in range(30):
            *_, info = env.step(env.expert_action())
            distances.append(np.linalg.norm(env.goal_position - env.position))
            successes.append(info["success"])
        # progress = fraction of the distance covered = fraction of the episode elapsed
        assert np.allclose(distances, d0 * (1 - np.arange(1, 31) / 30), atol=1e-6)
        assert successes[-1] and not any(successes[:20])
    with pytest.raises(ValueError, match="expert"):
        ToyReachEnv(expert="slow")


def test_action_repeat_reward_and_success_any_during_the_repeat():
    # Fast enough to pass through the goal region within one agent step.
    env = ToyReachEnv(seed=0, action_repeat=2, episode_length=3, step_size=0.08, success_radius=0.05)
    env.reset(options={"placement": [0.41, 0.5, 0.5, 0.5]})
    _, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0], np.float32))
    # sub-steps end at x = 0.49 (inside the goal radius) and x = 0.57 (outside again)
    assert info["success"] is True and reward == pytest.approx(-(0.01 + 0.07))
    assert np.allclose(env.position, [0.57, 0.5]) and not terminated and not truncated
    env.step(np.array([5.0, 0.0]))  # actions are clipped to [-1, 1]
    assert np.allclose(env.position, [0.73, 0.5])
    *_, truncated, info = env.step(np.zeros(2))
    assert truncated and info["success"] is False
    with pytest.raises(RuntimeError):
        env.step(np.zeros(2))


def test_goal_frame_is_the_expert_rollouts_last_frame():
    env = make_env("toy-reach", seed=0, episode_length=20)
    env.reset(seed=3)
    goal, expert_success = env.goal_frame()
    assert expert_success
    for _ in range(20):
        *_, info = env.step(env.expert_action())
    np.testing.assert_array_equal(goal, info["frame"])
    np.testing.assert_allclose(env.position, env.goal_position, atol=1e-9)


def test_goal_rollout_is_every_frame_of_the_expert_rollout():
    env = make_env("toy-reach", seed=0, episode_length=20)
    _, info = env.reset(seed=3)
    goal, _ = env.goal_frame()  # the last frame first, then the whole rollout (rendered again)
    rollout, expert_success = env.goal_rollout()
    assert rollout.shape == (21, 3, 84, 84) and expert_success
    np.testing.assert_array_equal(rollout[0], info["frame"])
    np.testing.assert_array_equal(rollout[-1], goal)
    frames = [env.step(env.expert_action())[-1]["frame"] for _ in range(20)]
    np.testing.assert_array_equal(rollout[1:], np.stack(frames))


def test_many_steps_run_fast_enough_for_rl_smoke_tests():
    env = make_env("toy-reach", seed=0, episode_length=50)
    env.reset()
    for _ in range(2000):  # a couple of seconds at most even on a busy CPU
        obs, *_, truncated, _ = env.step(env.action_space.sample())
        if truncated:
            env.reset()
    assert obs.shape == (9, 84, 84)
