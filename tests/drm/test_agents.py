import copy
import io
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from drm.agents import (DormantMonitor, DrMAgent, DrQV2Agent, Encoder, RandomShiftsAug, dormant_ratio,
                        expectile_loss, fresh_copy, perturb, perturb_factor, weight_init)
from drm.replay_buffer import ReplayBuffer

S, A, B = 32, 4, 16
OBS_SHAPE = (9, S, S)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks (tests/conftest.py)


def make_agent(use_drm: bool = False, amp: bool = False, **kwargs) -> DrQV2Agent:
    """The agent's defaults (fp32, channels_last encoder: fast on every CPU) unless told otherwise."""
    options = dict(feature_dim=16, hidden_dim=32, num_expl_steps=10, use_drm=use_drm, amp=amp)
    options.update(kwargs)
    return DrQV2Agent(OBS_SHAPE, (A,), "cpu", **options)


def random_batch(seed: int = 0, reward: float | None = None, discount: float = 0.9) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    return SimpleNamespace(
        obs=rng.integers(0, 256, (B, *OBS_SHAPE), dtype=np.uint8),
        next_obs=rng.integers(0, 256, (B, *OBS_SHAPE), dtype=np.uint8),
        action=rng.uniform(-1, 1, (B, A)).astype(np.float32),
        reward=(rng.normal(size=(B, 1)) if reward is None else np.full((B, 1), reward)).astype(np.float32),
        discount=np.full((B, 1), discount, np.float32))


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


# ---------------------------------------------------------------- networks
def test_encoder_repr_dim():
    assert Encoder((9, 84, 84)).repr_dim == 32 * 35 * 35 == 39200
    enc = Encoder(OBS_SHAPE)
    out = enc(torch.zeros(2, *OBS_SHAPE, dtype=torch.uint8))
    assert out.shape == (2, enc.repr_dim) == (2, 32 * 9 * 9)


def test_channels_last_and_bf16_encoder_match_fp32():
    torch.manual_seed(0)
    plain = Encoder(OBS_SHAPE)
    fast = Encoder(OBS_SHAPE, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    obs = torch.randint(0, 256, (4, *OBS_SHAPE), dtype=torch.uint8)
    ref = plain(obs)
    torch.testing.assert_close(fast(obs), ref, rtol=1e-4, atol=1e-5)  # same flatten order
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = fast(obs)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_random_shift_is_an_integer_crop_of_the_replicate_padded_image():
    torch.manual_seed(0)
    pad = 2
    x = torch.randint(0, 256, (6, 3, 10, 10), dtype=torch.uint8)
    out = RandomShiftsAug(pad)(x)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x.float(), (pad,) * 4, mode="replicate")
    for i in range(6):
        crops = [padded[i, :, dy:dy + 10, dx:dx + 10] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
        assert any(torch.equal(out[i].float(), c) for c in crops)
    torch.testing.assert_close(RandomShiftsAug(0)(x), x)


def test_expectile_loss_asymmetry():
    up, down = torch.tensor([1.0]), torch.tensor([-1.0])
    assert expectile_loss(up, 0.9).item() == pytest.approx(0.9)  # target above prediction
    assert expectile_loss(down, 0.9).item() == pytest.approx(0.1)
    assert expectile_loss(up, 0.5).item() == expectile_loss(down, 0.5).item()


# ---------------------------------------------------------------- dormant ratio / perturbation
def test_dormant_ratio_counts_dead_units():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 10), nn.ReLU(), nn.Linear(10, 6))
    with torch.no_grad():
        net[0].weight[:3] = 0.0  # 3 dead hidden units
        net[0].bias[:3] = 0.0
        net[2].weight[:1] = 0.0
        net[2].bias[:1] = 0.0
        net[2].weight[1:2] *= 1e-3  # tiny but alive: 1e-3 << 0.025 of the layer mean -> dormant
        net[2].bias[1:2] = 0.0
    x = torch.randn(256, 8)
    assert dormant_ratio(net, x, threshold=0.025) == pytest.approx((3 + 2) / 16)
    with DormantMonitor(net, threshold=0.025) as monitor:
        net(x)
    assert monitor.counts() == (5, 16)
    net(x)  # hooks are removed on exit
    assert monitor.counts() == (5, 16)
    assert dormant_ratio(net, x, threshold=0.0) == 0.0


def test_perturb_factor_formula():
    assert perturb_factor(0.0) == 0.95  # clipped at the top
    assert perturb_factor(0.1) == pytest.approx(0.8)
    assert perturb_factor(0.3) == pytest.approx(0.4)
    assert perturb_factor(0.9) == 0.2  # clipped at the bottom


def test_perturb_interpolates_linear_layers_only():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.Linear(7, 3))
    with torch.no_grad():
        net[1].weight.fill_(2.0)
        for layer in (net[0], net[2]):
            layer.bias.fill_(0.5)
    old = copy.deepcopy(net)
    fresh = fresh_copy(net, weight_init)
    perturb(net, fresh, 0.3)
    for i in (0, 2):
        torch.testing.assert_close(net[i].weight, 0.3 * old[i].weight + 0.7 * fresh[i].weight)
        torch.testing.assert_close(net[i].bias, 0.3 * old[i].bias)  # fresh biases are zero
    torch.testing.assert_close(net[1].weight, old[1].weight)  # LayerNorm kept
    assert not torch.equal(fresh[0].weight, old[0].weight)  # fresh is a new orthogonal draw
    w = fresh[0].weight  # (7, 5): orthonormal columns
    torch.testing.assert_close(w.T @ w, torch.eye(5), atol=1e-5, rtol=0)


def test_agent_perturb_against_fresh_init_and_optimizer_reset():
    torch.manual_seed(0)
    agent = make_agent(use_drm=True, amp=False)
    agent.update(random_batch(), step=20)  # fills the Adam states
    assert len(agent.actor_opt.state) > 0 and len(agent.value_opt.state) > 0
    agent.dormant_ratio = 0.3
    old_actor, old_critic, old_target = (copy.deepcopy(agent.actor), copy.deepcopy(agent.critic),
                                         copy.deepcopy(agent.critic_target))
    old_encoder = params(agent.encoder)

    torch.manual_seed(123)
    factor = agent.perturb()
    torch.manual_seed(123)  # replay the RNG draws of perturb(): actor first, then the critic
    fresh_actor = fresh_copy(old_actor, weight_init)
    fresh_critic = fresh_copy(old_critic, weight_init)

    assert factor == pytest.approx(1 - 2 * 0.3)
    torch.testing.assert_close(agent.actor.policy[0].weight,
                               factor * old_actor.policy[0].weight + (1 - factor) * fresh_actor.policy[0].weight)
    torch.testing.assert_close(agent.actor.trunk[0].weight,
                               factor * old_actor.trunk[0].weight + (1 - factor) * fresh_actor.trunk[0].weight)
    torch.testing.assert_close(agent.critic.Q1[0].weight,
                               factor * old_critic.Q1[0].weight + (1 - factor) * fresh_critic.Q1[0].weight)
    torch.testing.assert_close(agent.critic_target.Q1[0].weight,  # same fresh weights as the critic
                               factor * old_target.Q1[0].weight + (1 - factor) * fresh_critic.Q1[0].weight)
    torch.testing.assert_close(agent.actor.trunk[1].weight, old_actor.trunk[1].weight)  # LayerNorm kept
    assert not changed(old_encoder, agent.encoder)  # convs untouched unless perturb_encoder
    for opt in (agent.actor_opt, agent.critic_opt, agent.encoder_opt, agent.value_opt):
        assert len(opt.state) == 0


def test_perturbation_schedule_in_update():
    torch.manual_seed(0)
    agent = make_agent(use_drm=True, amp=True, perturb_every=4, perturb_encoder=True)  # channels_last convs
    assert "perturb_factor" not in agent.update(random_batch(), step=2)
    enc = params(agent.encoder)
    metrics = agent.update(random_batch(), step=4)
    assert "perturb_factor" in metrics and agent.next_perturb_step == 8
    assert changed(enc, agent.encoder)
    assert "perturb_factor" not in agent.update(random_batch(), step=6)


# ---------------------------------------------------------------- exploration
def test_drm_awaken_exploration():
    agent = make_agent(use_drm=True, stddev_schedule="linear(1.0,0.1,100)")
    assert agent.stddev(0) == pytest.approx(1 / (1 + math.exp(-10 * 0.8)))  # dormant ratio starts at 1
    agent.dormant_ratio = 0.1
    assert agent.stddev(50) == pytest.approx(1 / (1 + math.exp(1.0)))  # still asleep: sigmoid only
    agent.awaken_step = 40
    assert agent.stddev(50) == pytest.approx(max(1 / (1 + math.exp(1.0)), 0.91))  # schedule from awakening
    assert agent.stddev(10_000) == pytest.approx(1 / (1 + math.exp(1.0)))
    plain = make_agent(stddev_schedule="linear(1.0,0.1,100)")
    assert plain.stddev(50) == pytest.approx(0.55)


def test_awaken_latch_is_set_once():
    torch.manual_seed(0)
    agent = make_agent(use_drm=True, amp=False, dormant_threshold=0.0)  # nothing is ever dormant
    metrics = agent.update(random_batch(), step=12)
    assert agent.dormant_ratio == 0.0 and agent.awaken_step == 12 and metrics["awake"] == 1.0
    agent.update(random_batch(), step=14)
    assert agent.awaken_step == 12


def test_act_shapes_determinism_and_random_phase():
    torch.manual_seed(0)
    agent = make_agent()
    obs = np.random.default_rng(0).integers(0, 256, OBS_SHAPE, dtype=np.uint8)
    a1 = agent.act(obs, step=100, eval_mode=True)
    assert a1.shape == (A,) and a1.dtype == np.float32 and np.abs(a1).max() <= 1
    np.testing.assert_array_equal(a1, agent.act(obs, step=100, eval_mode=True))
    torch.manual_seed(5)
    s1 = agent.act(obs, step=100, eval_mode=False)
    torch.manual_seed(5)
    np.testing.assert_array_equal(s1, agent.act(obs, step=100, eval_mode=False))
    assert not np.array_equal(s1, a1)
    randoms = np.stack([agent.act(obs, step=0, eval_mode=False) for _ in range(50)])
    assert np.abs(randoms).max() <= 1 and randoms.std() > 0.4  # uniform on [-1, 1]: std 0.577


# ---------------------------------------------------------------- learning
@pytest.mark.parametrize("use_drm,amp", [(False, False), (False, True), (True, True)])
def test_update_returns_finite_metrics_and_changes_parameters(use_drm, amp):
    torch.manual_seed(0)
    agent = make_agent(use_drm=use_drm, amp=amp)
    nets = {"encoder": agent.encoder, "actor": agent.actor, "critic": agent.critic,
            "critic_target": agent.critic_target}
    if use_drm:
        nets["value"] = agent.value
    before = {name: params(net) for name, net in nets.items()}
    metrics = agent.update(random_batch(), step=20)
    expected = {"critic_loss", "critic_q1", "critic_q2", "critic_target_q", "actor_loss", "actor_logprob",
                "actor_ent", "actor_stddev", "actor_dormant_ratio", "batch_reward"}
    if use_drm:
        expected |= {"value_loss", "value", "awake"}
    assert expected <= set(metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    for name, net in nets.items():
        assert changed(before[name], net), name


def test_actor_gradient_does_not_reach_encoder():
    torch.manual_seed(0)
    agent = make_agent(amp=False)
    obs = torch.randint(0, 256, (B, *OBS_SHAPE), dtype=torch.uint8)
    h = agent.encoder(obs)
    enc, critic = params(agent.encoder), params(agent.critic)
    agent.update_actor(h.detach(), step=20)
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert not changed(enc, agent.encoder) and not changed(critic, agent.critic)


def test_update_from_replay_buffer_batch():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(100, (3, S, S), (A,), rng=0)
    buffer.add_first(rng.integers(0, 256, (3, S, S), dtype=np.uint8))
    for _ in range(20):
        buffer.add(rng.uniform(-1, 1, A), rng.integers(0, 256, (3, S, S), dtype=np.uint8), 1.0, False)
    agent = make_agent(use_drm=True)
    batch = buffer.sample(B, nstep=3, discount=0.9)
    metrics = agent.update(batch.to_torch("cpu"), step=20)
    assert metrics["batch_reward"] == pytest.approx(1 + 0.9 + 0.81, rel=1e-5)
    metrics = agent.update(batch, step=22)  # numpy fields work too
    assert math.isfinite(metrics["critic_loss"])


def test_critic_regresses_constant_reward():
    """Sanity learning: with discount 0 the TD target is the reward; Q must converge to it."""
    torch.manual_seed(0)
    agent = make_agent(amp=False, lr=1e-3)
    batch = random_batch(reward=1.0, discount=0.0)
    with torch.no_grad():  # fixed features keep it cheap; the encoder path is tested above
        h = agent.encoder(torch.as_tensor(batch.obs))
    action, reward, discount = (torch.as_tensor(x) for x in (batch.action, batch.reward, batch.discount))
    first = agent.update_critic(h, action, reward, discount, h, step=100)["critic_loss"]
    for _ in range(150):
        metrics = agent.update_critic(h, action, reward, discount, h, step=100)
    assert metrics["critic_loss"] < 0.01 * first
    assert metrics["critic_q1"] == pytest.approx(1.0, abs=0.05)


# ---------------------------------------------------------------- checkpointing
@pytest.mark.parametrize("use_drm", [False, True])
def test_state_dict_round_trip(use_drm):
    torch.manual_seed(0)
    agent = make_agent(use_drm=use_drm)
    agent.update(random_batch(), step=20)
    agent.awaken_step = 20 if use_drm else None
    blob = io.BytesIO()
    torch.save(agent.state_dict(), blob)
    blob.seek(0)
    state = torch.load(blob, weights_only=True)

    torch.manual_seed(1)
    other = DrMAgent(OBS_SHAPE, (A,), "cpu", feature_dim=16, hidden_dim=32, num_expl_steps=10) if use_drm \
        else make_agent()
    other.load_state_dict(state)
    for name in ("encoder", "actor", "critic", "critic_target"):
        for p, q in zip(getattr(agent, name).state_dict().values(), getattr(other, name).state_dict().values()):
            assert torch.equal(p, q), name
    assert other.actor_opt.state_dict()["state"][0]["step"] == agent.actor_opt.state_dict()["state"][0]["step"]
    assert (other.dormant_ratio, other.awaken_step, other.next_perturb_step) == \
           (agent.dormant_ratio, agent.awaken_step, agent.next_perturb_step)
    obs = np.random.default_rng(0).integers(0, 256, OBS_SHAPE, dtype=np.uint8)
    np.testing.assert_array_equal(agent.act(obs, 100, eval_mode=True), other.act(obs, 100, eval_mode=True))
    torch.manual_seed(9)
    m1 = agent.update(random_batch(1), step=22)
    torch.manual_seed(9)
    m2 = other.update(random_batch(1), step=22)
    assert m1 == m2  # identical continuation


# ---------------------------------------------------------------- state policy (obs_type=state)
@pytest.mark.parametrize("use_drm", [False, True])
def test_state_agent_acts_and_learns_from_a_state_replay(use_drm):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    d = 7
    buffer = ReplayBuffer(100, (3, S, S), (A,), rng=0, state_shape=(d,))
    states = rng.normal(size=(21, d)).astype(np.float32)
    buffer.add_first(rng.integers(0, 256, (3, S, S), dtype=np.uint8), state=states[0])
    for t in range(1, 21):
        buffer.add(rng.uniform(-1, 1, A), rng.integers(0, 256, (3, S, S), dtype=np.uint8), 1.0, False,
                   state=states[t])
    batch = buffer.sample(B, nstep=3, discount=0.9)
    assert batch.obs.shape == (B, d) and batch.next_obs.shape == (B, d)
    np.testing.assert_array_equal(batch.obs, states[batch.step])  # s_t and s_{t+n}, no stacking
    np.testing.assert_array_equal(batch.next_obs, states[batch.step + 3])
    assert batch.newest_frame.shape == (B, 3, S, S)  # the frames stay for the reward
    agent = DrQV2Agent((d,), (A,), "cpu", feature_dim=16, hidden_dim=32, num_expl_steps=0, use_drm=use_drm)
    assert not any(isinstance(m, nn.Conv2d) for m in agent.encoder.modules())
    assert isinstance(agent.aug, nn.Identity)
    action = agent.act(states[0], step=10, eval_mode=True)
    assert action.shape == (A,) and np.all(np.abs(action) <= 1)
    before = [p.clone() for p in agent.encoder.parameters()]
    metrics = agent.update(batch.to_torch("cpu"), step=20)
    assert all(math.isfinite(v) for v in metrics.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.encoder.parameters())), "critic trains the MLP"
