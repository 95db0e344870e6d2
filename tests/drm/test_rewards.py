import io
import numpy as np
import pytest
import torch

from drm.replay_buffer import ReplayBuffer
from drm.rewards import relabel
from video2reward import ProgressModel
from video2reward.methods.progressor import ProgressReward
from video2reward.reward_fn import EnvReward, SparseReward

S = 32


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return ProgressModel("convnet", image_size=S, amp=False, channels_last=False).eval()


def filled_buffer(episodes=3, length=12, seed=0):
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(1000, (3, S, S), (2,), frame_stack=3, rng=seed)
    for _ in range(episodes):
        frame = rng.integers(0, 256, (3, S, S), dtype=np.uint8)
        buf.add_first(frame, goal_frame=rng.integers(0, 256, (3, S, S), dtype=np.uint8))
        for t in range(length):
            buf.add(rng.uniform(-1, 1, 2).astype(np.float32), rng.integers(0, 256, (3, S, S), dtype=np.uint8),
                    float(t), t % 5 == 4, last=t == length - 1)
    return buf


def test_rewarder_step_matches_full_model(model):
    rng = np.random.default_rng(1)
    init, cur, goal = (rng.integers(0, 256, (3, S, S), dtype=np.uint8) for _ in range(3))
    rewarder = ProgressReward(model, alpha=0.7)
    rewarder.start_episode(init, goal)
    step = rewarder.step(cur)
    t = lambda x: torch.as_tensor(x)[None]  # noqa: E731
    torch.testing.assert_close(torch.tensor([step.reward]), model.reward(t(init), t(cur), t(goal), alpha=0.7),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.tensor([step.progress]), model.predict(t(init), t(cur), t(goal)).loc,
                               atol=1e-5, rtol=1e-5)
    assert step.sigma > 0


def test_window_relabel_scores_newest_frames_with_current_model(model):
    batch = filled_buffer().sample(8, nstep=3, discount=0.9).to_torch("cpu")
    rewarder = ProgressReward(model)
    out = relabel(batch, rewarder)
    expected = sum(0.9 ** i * model.reward(batch.init_frame, batch.window_frames[:, i], batch.goal_frame)
                   for i in range(3))
    torch.testing.assert_close(out.reward.squeeze(1), expected, atol=1e-4, rtol=1e-4)
    # the window's frames are the newest frames o_{t+1}..o_{t+n}: the last one is next_obs's newest frame
    assert torch.equal(batch.window_frames[:, -1], batch.next_obs[:, -3:])
    with torch.no_grad():  # the model changes (as refinement does): rewards are cached until refresh()
        model.fc_mu.bias += 1.0
    assert torch.equal(relabel(batch, rewarder).reward, out.reward)
    rewarder.refresh()
    again = relabel(batch, rewarder)
    torch.testing.assert_close(again.reward, out.reward + sum(0.9 ** i for i in range(3)), atol=1e-4, rtol=1e-4)


def test_episode_feature_cache_is_exact_and_dropped_by_refresh(model, monkeypatch):
    buf = filled_buffer(episodes=3)
    rewarder = ProgressReward(model)
    encoded = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda x, *a, **k: encoded.append(len(x)) or encode(x, *a, **k))
    seen, relabels, frames = [], [], []
    for _ in range(3):
        batch = buf.sample(16, nstep=3, discount=0.9).to_torch("cpu")
        seen.append(set(batch.episode.tolist()))
        frames.append({(e, t + 1 + i) for e, t in zip(batch.episode.tolist(), batch.step.tolist()) for i in range(3)})
        encoded.clear()
        out = relabel(batch, rewarder)
        relabels.append(sum(encoded))
        expected = sum(0.9 ** i * model.reward(batch.init_frame, batch.window_frames[:, i], batch.goal_frame)
                       for i in range(3))
        torch.testing.assert_close(out.reward.squeeze(1), expected, atol=1e-4, rtol=1e-4)
    # 3 episodes: their init/goal frames are encoded once; a window frame only the first time it is sampled
    assert relabels == [len(frames[0]) + 2 * len(seen[0]), len(frames[1] - frames[0]) + 2 * len(seen[1] - seen[0]),
                        len(frames[2] - frames[0] - frames[1]) + 2 * len(seen[2] - seen[0] - seen[1])]
    assert sum(relabels) < 3 * 48, "frames sampled again must not be encoded again"
    with torch.no_grad():  # the encoder changes (as refinement does); refresh() drops the features
        for p in model.parameters():
            p.mul_(1.1)
    rewarder.refresh()
    out = relabel(batch, rewarder)
    expected = sum(0.9 ** i * model.reward(batch.init_frame, batch.window_frames[:, i], batch.goal_frame)
                   for i in range(3))
    torch.testing.assert_close(out.reward.squeeze(1), expected, atol=1e-4, rtol=1e-4)


def test_paper_relabel_scores_oldest_stacked_frame_once(model):
    batch = filled_buffer().sample(8, nstep=3, discount=0.9).to_torch("cpu")
    out = relabel(batch, ProgressReward(model, relabel="paper"))
    expected = model.reward(batch.init_frame, batch.obs[:, :3], batch.goal_frame)
    torch.testing.assert_close(out.reward.squeeze(1), expected, atol=1e-5, rtol=1e-5)


def test_env_sparse_and_stored_keep_collected_rewards(model):
    batch = filled_buffer().sample(8, nstep=3, discount=0.9).to_torch("cpu")
    for reward in (EnvReward(), SparseReward(), ProgressReward(model, relabel="stored")):
        assert relabel(batch, reward) is batch
        assert not reward.needs_window
    assert EnvReward().step(None, 1.5, True).reward == 1.5
    assert SparseReward().step(None, 1.5, True).reward == 1.0 and SparseReward().step(None, 1.5, False).reward == 0
    assert EnvReward().step(None, 1.5, True).progress is None
    with pytest.raises(ValueError, match="relabel"):
        ProgressReward(model, relabel="oldest")


def test_rewarder_caches_round_trip_through_state_dict(model, monkeypatch):
    buf = filled_buffer(episodes=3)
    rewarder = ProgressReward(model)
    batch = buf.sample(16, nstep=3, discount=0.9).to_torch("cpu")
    out = relabel(batch, rewarder)
    blob = io.BytesIO()
    torch.save(rewarder.state_dict(), blob)
    blob.seek(0)
    restored = ProgressReward(model)
    restored.load_state_dict(torch.load(blob, weights_only=True))
    monkeypatch.setattr(model, "encode", lambda *a, **k: pytest.fail("a restored cache must not encode again"))
    assert torch.equal(relabel(batch, restored).reward, out.reward)


def test_baselines_get_their_own_default_checkpoint():
    from pathlib import Path

    from drm.reward_setup import checkpoint_source

    from .test_config import compose_cfg
    default = str(compose_cfg().reward.checkpoint)
    tcn = compose_cfg("reward_model=tcn")
    assert checkpoint_source(tcn) == str(Path(default).with_name(Path(default).stem + "_tcn.pth"))
    assert checkpoint_source(tcn, checkpoint_given=True) == default  # a file named on the command line is used
    assert checkpoint_source(compose_cfg()) == default
