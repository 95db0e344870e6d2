"""The field's reward forms beside the paper's (``form=delta``, ``success_bonus``), worked out by hand on
a 3-step episode, and the value table's budgeted refresh (``refresh_budget``): its staleness bound,
its exact limit and its resume."""
import io
import math

import numpy as np
import pytest
import torch

from drm.replay_buffer import ReplayBuffer
from video2reward import ProgressModel
from video2reward.frame_table import FrameTable
from video2reward.losses import gaussian_entropy
from video2reward.methods.progressor import ProgressReward
from video2reward.reward_fn import FrameReward

from .test_reward_fn import AddOne, AddOneHeadOnly, RedDistance, filled_buffer, frames

S = 16


class RedLevel(RedDistance):
    """Value = the frame's mean red level in [0, 1] (+ the finetuner's offset): easy to set by hand."""

    def reward_from_features(self, f_init, f_cur, f_goal):
        return f_cur[:, 0] + self.offset


def red(level):
    frame = torch.zeros(3, S, S, dtype=torch.uint8)
    frame[0] = round(level * 255)
    return frame


def test_delta_form_and_success_bonus_by_hand_on_a_three_step_episode():
    levels, success = [0.2, 0.6, 0.4, 1.0], [False, False, True]  # init, then three steps
    v = [round(x * 255) / 255 for x in levels]
    cases = {  # (form, bonus): the three step rewards, written out
        ("default", 0.0): [v[1], v[2], v[3]],
        ("delta", 0.0): [v[1] - v[0], v[2] - v[1], v[3] - v[2]],
        ("default", 2.0): [v[1], v[2] + 2, v[3]],
        ("delta", 2.0): [v[1] - v[0], v[2] - v[1] + 2, v[3] - v[2]],
    }
    success = [False, True, False]
    for (form, bonus), expected in cases.items():
        reward = FrameReward(RedLevel(), form=form, success_bonus=bonus)
        reward.start_episode(red(levels[0]), red(1.0))
        got = [reward.step(red(x), success=s).reward for x, s in zip(levels[1:], success)]
        assert got == pytest.approx(expected, abs=1e-6), (form, bonus)
    # delta telescopes: the episode's sum is the last value minus the first, whatever the path
    assert sum(cases[("delta", 0.0)]) == pytest.approx(v[3] - v[0])
    # "value" turns a difference model (VIP-style) into per-frame values
    vip_like = FrameReward(type("Delta", (RedLevel,), {"reward_kind": "difference"})(), form="value")
    vip_like.start_episode(red(0.2), red(1.0))
    assert vip_like.step(red(0.6)).reward == pytest.approx(v[1])


def test_relabelled_batches_use_the_same_forms():
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(200, (3, S, S), (2,), frame_stack=3, rng=0)
    levels = [0.1, 0.5, 0.3, 0.9]
    buf.add_first(red(levels[0]).numpy(), goal_frame=red(1.0).numpy())
    for t, (x, s) in enumerate(zip(levels[1:], [False, True, False])):
        buf.add(rng.uniform(-1, 1, 2).astype(np.float32), red(x).numpy(), 0.0, s, last=t == 2)
    v = [round(x * 255) / 255 for x in levels]
    batch = buf.sample(4, nstep=3, discount=0.5).to_torch("cpu")  # the one window: o_0 -> o_1 .. o_3
    assert (batch.step == 0).all()
    delta = FrameReward(RedLevel(), form="delta", success_bonus=2.0).score_batch(batch)
    torch.testing.assert_close(delta[0], torch.tensor([v[1] - v[0], v[2] - v[1] + 2, v[3] - v[2]]))
    plain = FrameReward(RedLevel(), success_bonus=2.0).score_batch(batch)
    torch.testing.assert_close(plain[0], torch.tensor([v[1], v[2] + 2, v[3]]))
    with pytest.raises(ValueError, match="success"):
        FrameReward(RedLevel(), relabel="paper", success_bonus=1.0)
    with pytest.raises(ValueError, match="delta"):
        FrameReward(RedLevel(), relabel="paper", form="delta")
    with pytest.raises(ValueError, match="form"):
        FrameReward(RedLevel(), form="potential")


def test_progressor_delta_is_the_change_of_mu_minus_alpha_entropy():
    torch.manual_seed(0)
    model = ProgressModel("convnet", image_size=32).eval()
    clip = torch.as_tensor(np.random.default_rng(1).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8))
    init, goal = clip[0], clip[-1]
    dist = model.predict(init[None].expand(4, -1, -1, -1), clip, goal[None].expand(4, -1, -1, -1))
    phi = (dist.loc - 0.4 * gaussian_entropy(dist.scale)).tolist()  # the paper's reward as the potential
    reward = ProgressReward(model, alpha=0.4, form="delta", success_bonus=0.5)
    reward.start_episode(init, goal)
    steps = [reward.step(frame, success=s) for frame, s in zip(clip[1:], [False, False, True])]
    expected = [phi[1] - phi[0], phi[2] - phi[1], phi[3] - phi[2] + 0.5]
    assert [s.reward for s in steps] == pytest.approx(expected, abs=1e-4)
    assert [s.progress for s in steps] == pytest.approx(dist.loc[1:].tolist(), abs=1e-4)  # mu still reported
    scores = reward.score_trajectory(clip, init, goal)
    assert scores.reward[1:] == pytest.approx([phi[1] - phi[0], phi[2] - phi[1], phi[3] - phi[2]], abs=1e-4)
    with pytest.raises(ValueError, match="train_mode"):
        ProgressReward(model, form="delta", train_mode=True)


def test_frame_table_next_keys_walks_in_order_and_wraps():
    table = FrameTable(1000)
    eps = torch.tensor([3, 3, 4, 5, 5, 5])
    steps = torch.tensor([0, 2, 1, 0, 1, 7])
    table.put(eps, steps, torch.arange(6.0))
    keys, nxt = table.next_keys((0, 0), 4)
    assert keys.tolist() == [[3, 0], [3, 2], [4, 1], [5, 0]] and nxt == (5, 1)
    keys, nxt = table.next_keys(nxt, 4)
    assert keys.tolist() == [[5, 1], [5, 7], [3, 0], [3, 2]]  # wrapped around once
    keys, _ = table.next_keys((0, 0), 10, where=lambda data: data >= 3)
    assert keys.tolist() == [[5, 0], [5, 1], [5, 7]]
    assert table.next_keys((0, 0), 3, where=lambda data: data > 99)[0].shape == (0, 2)


def copy_of(reward):
    blob = io.BytesIO()
    torch.save(reward.state_dict(), blob)
    blob.seek(0)
    fresh = RedDistance()
    restored = FrameReward(fresh, AddOneHeadOnly(fresh), refresh_budget=reward.refresh_budget)
    restored.load_state_dict(torch.load(blob, weights_only=False))
    fresh.offset.fill_(float(reward.model.offset))
    return restored


def test_budgeted_refresh_is_stale_by_at_most_kept_over_budget_batches():
    model, exact_model = RedDistance(), RedDistance()
    budget = 16
    reward = FrameReward(model, AddOneHeadOnly(model), refresh_budget=budget)
    exact = FrameReward(exact_model, AddOneHeadOnly(exact_model))
    buf = filled_buffer(episodes=6, length=10)
    worst = 0
    for i in range(40):
        for r in (reward, exact):
            r.finetune(None, None, None)  # every value one version older (AddOne adds 1 to the head's output)
        batch = buf.sample(8, nstep=3, discount=0.9).to_torch("cpu")
        kept = len(reward._values)
        behind = exact.score_batch(batch) - reward.score_batch(batch)  # in model versions
        assert (behind - behind.round()).abs().max() < 1e-4 and behind.min() > -1e-4
        behind = behind.round()
        bound = math.ceil(kept / budget)
        assert behind.max() <= bound, (i, float(behind.max()), bound)
        worst = max(worst, int(behind.max()))
    assert worst > 0, "values were used stale"
    # without further model changes every kept value becomes exact within ceil(N / B) batches
    batch = buf.sample(32, nstep=3, discount=0.9).to_torch("cpu")
    for _ in range(math.ceil(len(reward._values) / budget) + 1):
        reward.sweep()
    torch.testing.assert_close(reward.score_batch(batch), exact.score_batch(batch))


def test_budgeted_refresh_resumes_exactly_and_needs_a_frozen_encoder():
    model = RedDistance()
    reward = FrameReward(model, AddOneHeadOnly(model), refresh_budget=5)
    buf = filled_buffer(episodes=4, length=10)
    rng_batches = [buf.sample(8, nstep=3, discount=0.9).to_torch("cpu") for _ in range(8)]
    for batch in rng_batches[:4]:
        reward.finetune(None, None, None)
        reward.score_batch(batch)
    restored = copy_of(reward)
    for batch in rng_batches[4:]:
        for r in (reward, restored):
            r.finetune(None, None, None)
        torch.testing.assert_close(restored.score_batch(batch), reward.score_batch(batch))
    assert restored._cursor == reward._cursor and restored._version == reward._version
    with pytest.raises(ValueError, match="encoder"):
        FrameReward(model, AddOne(model), refresh_budget=5)
    FrameReward(model, refresh_budget=5)  # no finetuner: the model never changes, nothing is stale


def test_evicted_episodes_are_forgotten_and_the_sweep_skips_them():
    model = RedDistance()
    reward = FrameReward(model, AddOneHeadOnly(model), refresh_budget=1000)
    buf = ReplayBuffer(35, (3, S, S), (2,), frame_stack=3, rng=0)  # holds 3 of the 10-step episodes
    rng = np.random.default_rng(0)
    for episode in range(6):
        reward.forget(buf.oldest_episode)
        buf.add_first(rng.integers(0, 256, (3, S, S), dtype=np.uint8))
        reward.start_episode(frames(1, episode)[0], frames(1, 50 + episode)[0])
        for t in range(10):
            reward.step(frames(1, 100 * episode + t)[0])
            reward.keep(*buf.add(np.zeros(2, np.float32), frames(1, 100 * episode + t)[0].numpy(), 0.0, False,
                                 last=t == 9))
    reward.forget(buf.oldest_episode)
    live = buf.oldest_episode
    assert live >= 3
    keys, _ = reward._values.items()
    assert int(keys[:, 0].min()) >= live and len(keys) == 10 * (6 - live)
    assert min(reward._episode_features) >= live and int(reward._frame_features.items()[0][:, 0].min()) >= live
    reward.finetune(None, None, None)
    assert reward.sweep() == 10 * (6 - live)  # only live frames are re-scored
    table = FrameTable(100)
    table.put(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 1, 1]), torch.arange(4.0))
    table.drop_before(3)  # more than half the rows: reclaimed
    assert table.items()[0].tolist() == [[3, 1]] and table._base == 3
    table.drop_before(9)
    assert len(table) == 0
