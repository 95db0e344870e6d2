import io

import numpy as np
import pytest
import torch

from drm.replay_buffer import Batch, ReplayBuffer, discounted_sum

S = 8  # tiny frames: every pixel of frame (episode e, step i) equals code(e, i)


def code(episode: int, step: int) -> int:
    return (episode * 50 + step) % 256


def frame(episode: int, step: int) -> np.ndarray:
    return np.full((3, S, S), code(episode, step), dtype=np.uint8)


def fill(buffer: ReplayBuffer, episodes: int, length: int, first_episode: int = 0) -> None:
    """Episode e, step i: action [e, i], reward 10 e + i, success on even steps."""
    for e in range(first_episode, first_episode + episodes):
        buffer.add_first(frame(e, 0), goal_frame=np.full((3, S, S), 200 + e, np.uint8))
        for i in range(1, length + 1):
            buffer.add(np.array([e, i], np.float32), frame(e, i), 10.0 * e + i, i % 2 == 0,
                       last=i == length)


def codes(frames: np.ndarray) -> np.ndarray:
    """(..., 3, S, S) -> (...) pixel code of each frame."""
    return frames[..., 0, 0, 0].astype(int)


def test_discounted_sum_numpy_and_torch():
    rewards = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]], np.float32)
    expected = np.array([[1 + 0.5 * 2 + 0.25 * 3], [0.25]], np.float32)
    np.testing.assert_allclose(discounted_sum(rewards, 0.5), expected)
    out = discounted_sum(torch.from_numpy(rewards), 0.5)
    assert out.shape == (2, 1) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected)


def test_nstep_return_hand_computed():
    buffer = ReplayBuffer(100, (3, S, S), (2,), frame_stack=3, rng=0)
    fill(buffer, episodes=1, length=10)
    batch = buffer.sample(64, nstep=3, discount=0.9)
    for row in range(64):
        t = int(batch.step[row])
        # rewards r_{t+1}, r_{t+2}, r_{t+3} = t+1, t+2, t+3 in episode 0
        expected = (t + 1) + 0.9 * (t + 2) + 0.81 * (t + 3)
        assert batch.reward[row, 0] == pytest.approx(expected, rel=1e-6)
        np.testing.assert_array_equal(batch.env_reward_window[row], [t + 1, t + 2, t + 3])
        np.testing.assert_array_equal(batch.success_window[row], [(t + j) % 2 == 0 for j in (1, 2, 3)])
        np.testing.assert_array_equal(batch.action[row], [0, t + 1])  # a_t is stored with o_{t+1}
        np.testing.assert_array_equal(codes(batch.window_frames[row]), [t + 1, t + 2, t + 3])
    np.testing.assert_allclose(batch.discount, np.full((64, 1), 0.9 ** 3, np.float32))
    assert batch.reward.dtype == np.float32 and batch.reward.shape == (64, 1)
    assert batch.nstep == 3 and batch.gamma == 0.9


def test_window_never_crosses_episode_end():
    buffer = ReplayBuffer(1000, (3, S, S), (2,), rng=1)
    fill(buffer, episodes=5, length=6)
    batch = buffer.sample(500, nstep=4, discount=0.99)
    assert set(batch.step.tolist()) == {0, 1, 2}  # t + 4 <= 6
    for row in range(500):
        e, t = int(batch.episode[row]), int(batch.step[row])
        assert (codes(batch.window_frames[row]) == [code(e, t + j) for j in range(1, 5)]).all()
        assert codes(batch.next_obs[row].reshape(3, 3, S, S))[-1] == code(e, t + 4)
    # uniform over the 5 x 3 valid transitions
    counts = np.bincount(batch.episode * 3 + batch.step, minlength=15)
    assert counts.min() > 10


def test_frame_stacking_at_episode_start():
    buffer = ReplayBuffer(100, (3, S, S), (2,), frame_stack=3, rng=0)
    fill(buffer, episodes=1, length=8, first_episode=1)
    batch = buffer.sample(200, nstep=2, discount=0.99)
    for row in range(200):
        t = int(batch.step[row])
        stack = [code(1, max(s, 0)) for s in (t - 2, t - 1, t)]
        next_stack = [code(1, max(s, 0)) for s in (t, t + 1, t + 2)]
        assert codes(batch.obs[row].reshape(3, 3, S, S)).tolist() == stack
        assert codes(batch.next_obs[row].reshape(3, 3, S, S)).tolist() == next_stack
    assert 0 in batch.step and 1 in batch.step  # both padded cases were drawn
    assert (codes(batch.init_frame) == code(1, 0)).all()
    assert (codes(batch.goal_frame) == 201).all()
    assert batch.obs.shape == (200, 9, S, S) and batch.obs.dtype == np.uint8
    np.testing.assert_array_equal(batch.oldest_frame, batch.obs[:, :3])


def test_eviction_drops_whole_oldest_episode():
    length = 5  # 6 slots per episode
    buffer = ReplayBuffer(15, (3, S, S), (2,), rng=0)
    fill(buffer, episodes=2, length=length)
    assert len(buffer) == 10 and buffer.num_episodes == 2
    fill(buffer, episodes=1, length=length, first_episode=2)  # wraps: overwrites episode 0's slots
    assert buffer.num_episodes == 2 and len(buffer) == 10
    batch = buffer.sample(300, nstep=1, discount=1.0)
    assert set(batch.episode.tolist()) == {1, 2}
    for row in range(300):
        e, t = int(batch.episode[row]), int(batch.step[row])
        assert codes(batch.obs[row].reshape(3, 3, S, S))[-1] == code(e, t)
        assert codes(batch.window_frames[row])[0] == code(e, t + 1)


def test_in_progress_episode_is_sampled_within_its_steps():
    buffer = ReplayBuffer(50, (3, S, S), (1,), rng=0)
    buffer.add_first(frame(0, 0))
    with pytest.raises(ValueError, match="no transition"):
        buffer.sample(4, nstep=2, discount=0.9)
    buffer.add([0.1], frame(0, 1), 1.0, False)
    buffer.add([0.2], frame(0, 2), 2.0, False)
    batch = buffer.sample(16, nstep=2, discount=0.9)
    assert (batch.step == 0).all()
    assert (codes(batch.goal_frame) == 0).all()  # no goal given -> zeros
    np.testing.assert_allclose(batch.reward[:, 0], 1.0 + 0.9 * 2.0)


def test_api_errors():
    buffer = ReplayBuffer(10, (3, S, S), (1,))
    with pytest.raises(RuntimeError, match="add_first"):
        buffer.add([0.0], frame(0, 1), 0.0, False)
    with pytest.raises(ValueError, match="uint8"):
        buffer.add_first(np.zeros((3, S, S), np.float32))
    buffer.add_first(frame(0, 0))
    for i in range(1, 10):
        buffer.add([0.0], frame(0, i), 0.0, False)
    with pytest.raises(ValueError, match="longer than the buffer capacity"):
        buffer.add([0.0], frame(0, 10), 0.0, False)


def test_seeded_sampling_is_reproducible():
    batches = []
    for _ in range(2):
        buffer = ReplayBuffer(200, (3, S, S), (2,), rng=np.random.default_rng(123))
        fill(buffer, episodes=3, length=10)
        batches.append(buffer.sample(32, nstep=3, discount=0.9))
    np.testing.assert_array_equal(batches[0].episode, batches[1].episode)
    np.testing.assert_array_equal(batches[0].step, batches[1].step)


def test_bytes_per_transition():
    buffer = ReplayBuffer(1000, (3, 84, 84), (4,))
    buffer.add_first(np.zeros((3, 84, 84), np.uint8))
    for _ in range(100):
        buffer.add(np.zeros(4, np.float32), np.zeros((3, 84, 84), np.uint8), 0.0, False)
    per = buffer.bytes_per_transition
    assert 3 * 84 * 84 < per < 1.1 * 3 * 84 * 84
    assert per < 9 * 84 * 84 / 2.5  # vs DrQ-v2's stored 9-channel stack


def test_window_flag_and_to_torch():
    buffer = ReplayBuffer(100, (3, S, S), (2,), rng=0)
    fill(buffer, episodes=2, length=6)
    batch = buffer.sample(4, nstep=2, discount=0.9, window=False)
    assert batch.window_frames is None
    tb = batch.to_torch("cpu")
    assert isinstance(tb, Batch) and tb.obs.dtype == torch.uint8 and tb.reward.dtype == torch.float32
    assert tb.nstep == 2 and tb.window_frames is None


def test_state_dict_round_trip_resumes_exactly():
    buffer = ReplayBuffer(25, (3, S, S), (2,), rng=7)
    fill(buffer, episodes=3, length=8)  # 27 slots: the third episode wraps and evicts the first
    buffer.add_first(frame(9, 0), goal_frame=frame(9, 99))
    buffer.add([1.0, 2.0], frame(9, 1), 5.0, True)  # episode left open
    buffer.sample(8, nstep=2, discount=0.9)  # advance the RNG

    blob = io.BytesIO()
    torch.save(buffer.state_dict(), blob)
    blob.seek(0)
    restored = ReplayBuffer(25, (3, S, S), (2,), rng=0)
    restored.load_state_dict(torch.load(blob, weights_only=True))

    assert len(restored) == len(buffer) and restored.num_episodes == buffer.num_episodes
    for buf in (buffer, restored):  # both continue the open episode identically
        buf.add([0.0, 0.0], frame(9, 2), 6.0, False, last=True)
    a, b = buffer.sample(32, nstep=2, discount=0.9), restored.sample(32, nstep=2, discount=0.9)
    for name in ("obs", "action", "reward", "next_obs", "init_frame", "goal_frame", "window_frames",
                 "episode", "step"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    with pytest.raises(ValueError, match="mismatch"):
        ReplayBuffer(26, (3, S, S), (2,)).load_state_dict(buffer.state_dict())


def test_states_persist_through_segments_and_state_dict(tmp_path):
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(30, (3, 4, 4), (2,), rng=0, state_shape=(5,))
    with pytest.raises(ValueError, match="state"):
        buf.add_first(np.zeros((3, 4, 4), np.uint8))
    saves = []
    for episode in range(4):
        buf.add_first(rng.integers(0, 256, (3, 4, 4), dtype=np.uint8), state=rng.normal(size=5))
        for t in range(8):
            buf.add(np.zeros(2), rng.integers(0, 256, (3, 4, 4), dtype=np.uint8), 0.0, False, last=t == 7,
                    state=rng.normal(size=5))
        saves.append(buf.save(tmp_path))
    restored = ReplayBuffer(30, (3, 4, 4), (2,), state_shape=(5,))
    restored.load(tmp_path, saves[-1])
    a, b = buf.sample(6, 2, 0.9), restored.sample(6, 2, 0.9)
    assert a.obs.shape == (6, 5) and a.obs.dtype == np.float32
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.next_obs, b.next_obs)
    twin = ReplayBuffer(30, (3, 4, 4), (2,), state_shape=(5,))
    twin.load_state_dict(buf.state_dict())
    np.testing.assert_array_equal(buf.sample(6, 2, 0.9).obs, twin.sample(6, 2, 0.9).obs)
    with pytest.raises(ValueError, match="mismatch"):
        ReplayBuffer(30, (3, 4, 4), (2,)).load_state_dict(buf.state_dict())


def test_window_frames_gather_only_what_is_indexed():
    buffer = ReplayBuffer(100, (3, S, S), (2,), rng=0)
    fill(buffer, episodes=3, length=8)
    batch = buffer.sample(6, nstep=3, discount=0.9)
    full = np.asarray(batch.window_frames)
    assert full.shape == batch.window_frames.shape == (6, 3, 3, S, S)
    for row in range(6):
        e, t = int(batch.episode[row]), int(batch.step[row])
        assert codes(full[row]).tolist() == [code(e, t + j) for j in (1, 2, 3)]
    tb = batch.to_torch("cpu")
    rows, cols = torch.tensor([4, 0, 4]), torch.tensor([2, 1, 0])
    picked = tb.window_frames[rows, cols]  # torch indices, a tensor back: only these three frames
    assert isinstance(picked, torch.Tensor) and picked.dtype == torch.uint8 and picked.shape == (3, 3, S, S)
    assert torch.equal(picked, torch.from_numpy(full[[4, 0, 4], [2, 1, 0]]))
    assert torch.equal(tb.window_frames[:, -1], tb.next_obs[:, -3:])  # o_{t+n} is next_obs's newest frame
