"""Meta-World pixel env: seeding, orientation, step semantics, goal frames."""
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from metaworld.env_dict import ALL_V3_ENVIRONMENTS  # noqa: E402
from metaworld.policies import ENV_POLICY_MAP  # noqa: E402

from drm.envs import CAMERA, MW_TASKS, PAPER_TASKS, TASKS, make_env  # noqa: E402

S = 84


@pytest.fixture(scope="module")
def env():
    env = make_env("reach", seed=0, episode_length=30)
    yield env
    env.close()


def test_task_lists_cover_metaworld_and_toy():
    assert list(MW_TASKS) == [k.removesuffix("-v3") for k in ALL_V3_ENVIRONMENTS]
    assert len(MW_TASKS) == 50 and set(TASKS) == set(MW_TASKS) | {"toy-reach"}
    assert set(PAPER_TASKS) <= set(MW_TASKS) and len(PAPER_TASKS) == 6
    assert all(f"{t}-v3" in ENV_POLICY_MAP for t in MW_TASKS)


def test_unknown_task_lists_valid_names_on_one_line():
    with pytest.raises(ValueError) as err:
        make_env("drawer-opn")
    msg = str(err.value)
    assert "\n" not in msg and "'drawer-opn'" in msg
    assert all(t in msg for t in ("drawer-open", "door-open", "toy-reach"))


def test_v3_suffix_accepted_and_described():
    env = make_env("drawer-open-v3", seed=0, episode_length=5, render_quality="default")
    desc = env.describe()
    assert env.task == desc["task"] == "drawer-open"
    assert desc["camera"] == CAMERA == "corner4" and desc["render_quality"] == "default"
    assert desc["image_size"] == S and set(desc["versions"]) == {"metaworld", "mujoco"}
    assert env.metadata["render_quality"] == "default"
    env.close()
    with pytest.raises(ValueError, match="render_quality"):
        make_env("drawer-open", render_quality="ultra")


def test_reset_observation_and_spaces(env):
    assert env.observation_space.shape == (9, S, S) and env.observation_space.dtype == np.uint8
    assert env.action_space.shape == (4,) and env.action_space.dtype == np.float32
    assert (env.action_space.low == -1).all() and (env.action_space.high == 1).all()
    obs, info = env.reset(seed=3)
    assert obs.shape == (9, S, S) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    assert info["success"] is False and info["env_reward"] == 0.0
    assert info["frame"].shape == (3, S, S)
    for k in range(3):  # the stack starts as copies of the reset frame
        np.testing.assert_array_equal(obs[3 * k:3 * k + 3], info["frame"])
    np.testing.assert_array_equal(env.render(), info["frame"].transpose(1, 2, 0))


def test_seeded_resets_reproduce_frames(env):
    first, _ = env.reset(seed=11)
    env.step(env.action_space.sample())
    again, _ = env.reset(seed=11)
    other = make_env("reach", seed=123, episode_length=30)  # constructor seed does not matter
    elsewhere, _ = other.reset(seed=11)
    different, _ = other.reset(seed=12)
    other.close()
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, elsewhere)
    assert not np.array_equal(first, different)


def test_unseeded_resets_follow_the_constructor_seed():
    a, b = (make_env("reach", seed=5, episode_length=3) for _ in range(2))
    frames_a = [a.reset()[0] for _ in range(2)]
    frames_b = [b.reset()[0] for _ in range(2)]
    a.close(), b.close()
    np.testing.assert_array_equal(frames_a[0], frames_b[0])
    np.testing.assert_array_equal(frames_a[1], frames_b[1])
    assert not np.array_equal(frames_a[0], frames_a[1])  # a fresh placement every episode


def test_action_repeat_episode_length_and_stack_order():
    env = make_env("reach", seed=0, episode_length=4, action_repeat=2)
    ref = make_env("reach", seed=0, episode_length=4, action_repeat=2)
    obs, info = env.reset(seed=2)
    ref.reset(seed=2)
    prev = info["frame"]
    action = np.array([0.5, -0.3, 0.2, 0.0], np.float32)
    for t in range(1, 5):
        obs, reward, terminated, truncated, info = env.step(action)
        # one agent step = two Meta-World steps with the same action, rewards summed
        raw = [ref.unwrapped_mw.step(action) for _ in range(2)]
        assert env.unwrapped_mw.curr_path_length == 2 * t
        assert reward == pytest.approx(raw[0][1] + raw[1][1]) and info["env_reward"] == reward
        assert info["success"] == any(r[4]["success"] for r in raw)
        assert terminated is False and truncated == (t == 4)
        np.testing.assert_array_equal(obs[-3:], info["frame"])  # newest last
        np.testing.assert_array_equal(obs[3:6], prev)
        prev = info["frame"]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(action)
    env.close(), ref.close()


def _project(model, data, cam, point, size):
    """(column, row) of a world point in the camera's own image (pinhole, row 0 at the top)."""
    rot = data.cam_xmat[cam].reshape(3, 3)  # columns: camera x (right), y (up), z (backwards)
    x, y, z = rot.T @ (point - data.cam_xpos[cam])
    focal = 0.5 * size / np.tan(np.deg2rad(model.cam_fovy[cam]) / 2)
    return size / 2 + focal * x / -z, size / 2 - focal * y / -z


def test_frames_are_upright_with_table_at_the_bottom(env):
    env.reset(seed=1)
    raise_hand = np.array([0, 0, 1, 0], np.float32)
    for _ in range(25):
        env.step(raise_hand)
    mw = env.unwrapped_mw
    model, data = mw.model, mw.data
    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA)
    renderer = mujoco.Renderer(model, S, S)
    renderer.update_scene(data, camera=cam)
    camera_image = renderer.render()
    renderer.enable_segmentation_rendering()
    renderer.update_scene(data, camera=cam)
    segmentation = renderer.render()
    renderer.close()
    # corner4's own image has the table on top; the env flips it vertically (no mirroring)
    np.testing.assert_array_equal(env.render(), camera_image[::-1])
    seg = segmentation[::-1]
    is_geom = seg[..., 1] == mujoco.mjtObj.mjOBJ_GEOM
    body = np.where(is_geom, model.geom_bodyid[seg[..., 0]], -1)

    def in_subtree(b, root):
        while b > 0 and b != root:
            b = model.body_parentid[b]
        return b == root

    hand = model.body("hand").id
    hand_rows, hand_cols = np.nonzero(np.vectorize(lambda b: b > 0 and in_subtree(b, hand))(body))
    col, row = _project(model, data, cam, data.body("hand").xpos, S)
    row = S - row  # the flip
    assert row < S / 3  # the raised hand is near the top of the image
    assert abs(hand_rows.mean() - row) < 4 and abs(hand_cols.mean() - col) < 4
    table_rows, _ = np.nonzero(body == model.body("tablelink").id)
    assert table_rows.size > 0.2 * S * S and table_rows.mean() > 0.6 * S


def test_goal_frame_is_the_expert_rollouts_last_frame(env):
    env.reset(seed=4)
    goal, expert_success = env.goal_frame()
    assert goal.shape == (3, S, S) and goal.dtype == np.uint8
    again, _ = env.goal_frame()  # cached for the episode
    np.testing.assert_array_equal(goal, again)
    success = False
    for _ in range(env.episode_length):
        _, _, _, truncated, info = env.step(env.expert_action())
        success |= info["success"]
    assert truncated
    np.testing.assert_array_equal(goal, info["frame"])
    assert expert_success == success
    assert expert_success  # reach's expert solves it well within 30 agent steps
    env.reset(seed=5)
    assert not np.array_equal(env.goal_frame()[0], goal)  # a new episode, a new goal


def test_render_quality_default_differs_from_fast():
    fast = make_env("reach", seed=0, episode_length=2, render_quality="fast")
    default = make_env("reach", seed=0, episode_length=2, render_quality="default")
    a, b = fast.reset(seed=0)[1]["frame"], default.reset(seed=0)[1]["frame"]
    fast.close(), default.close()
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 40  # same scene, other shading


@pytest.mark.parametrize("task, dim", [("toy-reach", 4), ("drawer-open", 39)])
def test_state_observations_keep_frames_for_the_reward(task, dim):
    env = make_env(task, seed=3, image_size=32, episode_length=3, obs_type="state")
    pixels = make_env(task, seed=3, image_size=32, episode_length=3)
    obs, info = env.reset(seed=3)
    _, pixel_info = pixels.reset(seed=3)
    assert obs.shape == (dim,) == env.observation_space.shape and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    np.testing.assert_array_equal(info["frame"], pixel_info["frame"])  # the same scene, rendered
    action = np.zeros(env.action_space.shape, np.float32)
    next_obs, _, _, _, info = env.step(action)
    assert next_obs.shape == (dim,) and info["frame"].shape == (3, 32, 32)
    assert env.goal_frame()[0].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="obs_type"):
        make_env(task, obs_type="joints")
    env.close()
    pixels.close()


def test_fast_scene_without_reflections_keeps_every_pixel():
    """``fast`` turns MuJoCo's reflection pass off: a real saving, and no pixel of any task moves."""
    from drm.envs.metaworld_env import configure_scene
    rng = np.random.default_rng(0)
    for task in MW_TASKS:
        env = make_env(task, seed=1, episode_length=4)
        env.reset(seed=2)
        for _ in range(3):
            env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        mw = env.unwrapped_mw
        flags = env._renderer.scene.flags
        assert flags[mujoco.mjtRndFlag.mjRND_REFLECTION] == 0, task
        fast = env._render_rgb().copy()
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 1  # what the renderer drew before
        env._renderer.update_scene(mw.data, camera=env._camera_id)
        with_reflections = env._render_rgb()
        np.testing.assert_array_equal(fast, with_reflections, err_msg=task)
        configure_scene(env._renderer, "default")  # default leaves the model's own flags alone
        assert flags[mujoco.mjtRndFlag.mjRND_REFLECTION] == 1
        env.close()


def test_state_env_without_frames_renders_nothing():
    env = make_env("drawer-open", seed=3, image_size=32, episode_length=3, obs_type="state")
    twin = make_env("drawer-open", seed=3, image_size=32, episode_length=3, obs_type="state")
    env.render_frames = False
    calls = []
    env._render_rgb = lambda: calls.append(1)  # would fail the test's frames check if called
    obs, info = env.reset(seed=3)
    twin_obs, _ = twin.reset(seed=3)
    np.testing.assert_array_equal(obs, twin_obs)  # the same simulation
    action = np.full(4, 0.3, np.float32)
    obs, reward, _, _, info = env.step(action)
    twin_obs, twin_reward, _, _, _ = twin.step(action)
    np.testing.assert_array_equal(obs, twin_obs)
    assert reward == twin_reward and not calls
    assert info["frame"].shape == (3, 32, 32) and not info["frame"].any()
    pixels = make_env("reach", seed=0, episode_length=2)
    with pytest.raises(ValueError, match="obs_type='state'"):
        pixels.render_frames = False
    env.close(), twin.close(), pixels.close()
