import pytest
import numpy as np
import torch

from video2reward.methods.pushback import PushBackFinetuner, PushBackConfig, pushback_target
from video2reward import ProgressModel
from video2reward.data import VideoDataset

S = 32


def expert_dataset(n=4, length=11, seed=0):
    """Synthetic 'expert' videos: a bright bar that grows with progress."""
    rng = np.random.default_rng(seed)
    trajs = []
    for _ in range(n):
        base = rng.integers(0, 60, (3, S, S), dtype=np.uint8)
        frames = np.repeat(base[None], length, 0)
        for t in range(length):
            frames[t, :, :, : 2 + t * (S - 2) // (length - 1)] = 230
        trajs.append(frames)
    return VideoDataset.from_trajectories(trajs, "toy")


def test_pushback_target_is_detached_and_scaled():
    mu = torch.tensor([0.5, 1.0], requires_grad=True)
    sigma = torch.tensor([0.2, 0.3], requires_grad=True)
    target = pushback_target(mu, sigma, beta=0.9, sigma_scale=1.0)
    torch.testing.assert_close(target.loc, torch.tensor([0.45, 0.9]))
    torch.testing.assert_close(target.scale, torch.tensor([0.2, 0.3]))
    assert not target.loc.requires_grad and not target.scale.requires_grad


def test_pushback_lowers_progress_on_agent_frames_and_leaves_eval_mode():
    torch.manual_seed(0)
    model = ProgressModel("convnet", image_size=S, amp=False, channels_last=False)
    expert = expert_dataset()
    finetuner = PushBackFinetuner(model, expert, PushBackConfig(lr=1e-3, pushback_weight=1.0, expert_batch_size=4,
                                                          replay_batch_size=8), amp=False, seed=0)
    rng = np.random.default_rng(1)
    agent = [torch.as_tensor(rng.integers(0, 256, (8, 3, S, S), dtype=np.uint8)) for _ in range(3)]
    before = model.predict(*agent).loc.mean()
    with torch.no_grad():  # start from a model that calls agent frames "done"
        model.fc_mu.bias.fill_(1.0 - before.item() + 1.0)
    start = model.predict(*agent).loc.mean()
    for _ in range(15):
        metrics = finetuner.finetune(*agent)
    assert not model.training
    assert all(np.isfinite(v) for v in metrics.values())
    assert model.predict(*agent).loc.mean() < start - 0.05


def test_expert_triplets_have_fixed_endpoints_and_delta_std():
    model = ProgressModel("convnet", image_size=S)
    expert = expert_dataset(n=1, length=11)
    finetuner = PushBackFinetuner(model, expert, seed=3)
    frames, label_mu, label_std = finetuner.expert_triplets(16)
    assert frames.shape == (16, 3, 3, S, S)
    traj = expert.trajectory(0)
    assert (frames[:, 0] == traj[0]).all() and (frames[:, 2] == traj[-1]).all()
    for f, m in zip(frames[:, 1], label_mu):  # the middle frame sits at label * (L - 1)
        assert torch.equal(f, traj[int(round(m.item() * 10))])
    torch.testing.assert_close(label_std, torch.full((16,), (1 / 10) ** 0.5))
    assert ((label_mu >= 0) & (label_mu <= 1)).all()


def test_refiner_state_round_trip(tmp_path):
    model = ProgressModel("convnet", image_size=S)
    finetuner = PushBackFinetuner(model, expert_dataset(), PushBackConfig(expert_batch_size=2), seed=0)
    finetuner.finetune(*(torch.zeros(2, 3, S, S, dtype=torch.uint8),) * 3)
    torch.save(finetuner.state_dict(), tmp_path / "r.pt")
    other = PushBackFinetuner(model, expert_dataset(), PushBackConfig(expert_batch_size=2), seed=99)
    other.load_state_dict(torch.load(tmp_path / "r.pt", weights_only=True))
    a, b = finetuner.expert_triplets(4), other.expert_triplets(4)
    assert torch.equal(a[0], b[0])


def test_head_only_pushback_trains_the_head_alone_and_still_pushes_back():
    torch.manual_seed(0)
    model = ProgressModel("convnet", image_size=S, amp=False, channels_last=False)
    finetuner = PushBackFinetuner(model, expert_dataset(), PushBackConfig(lr=1e-3, pushback_weight=1.0, expert_batch_size=4,
                                                                    replay_batch_size=8, params="head"), seed=0)
    assert finetuner.frozen_features and not PushBackFinetuner(model, expert_dataset()).frozen_features
    encoder = {k: v.clone() for k, v in model.model.state_dict().items()}
    head = [p.detach().clone() for p in model.head_parameters()]
    rng = np.random.default_rng(1)
    agent = [torch.as_tensor(rng.integers(0, 256, (8, 3, S, S), dtype=np.uint8)) for _ in range(3)]
    with torch.no_grad():
        model.fc_mu.bias.fill_(2.0 - model.predict(*agent).loc.mean().item())
    features = model.encode(agent[1])
    start = model.predict(*agent).loc.mean()
    for _ in range(15):
        metrics = finetuner.finetune(*agent)
    assert not model.training and all(np.isfinite(v) for v in metrics.values())
    for k, v in model.model.state_dict().items():  # weights and BatchNorm statistics alike
        assert torch.equal(v, encoder[k]), k
    torch.testing.assert_close(model.encode(agent[1]), features)
    assert any(not torch.equal(p, q) for p, q in zip(model.head_parameters(), head))
    assert model.predict(*agent).loc.mean() < start - 0.05
    with pytest.raises(ValueError, match="params"):
        PushBackConfig(params="encoder")


def test_head_only_step_from_given_features_is_the_step_from_frames():
    rng = np.random.default_rng(2)
    agent = [torch.as_tensor(rng.integers(0, 256, (8, 3, S, S), dtype=np.uint8)) for _ in range(3)]
    runs = []
    for given in (False, True):
        torch.manual_seed(0)
        model = ProgressModel("convnet", image_size=S, amp=False, channels_last=False)
        finetuner = PushBackFinetuner(model, expert_dataset(), PushBackConfig(lr=1e-3, pushback_weight=1.0, expert_batch_size=4,
                                                                        replay_batch_size=8, params="head"), seed=0)
        features = torch.stack([model.encode(x) for x in agent], 1) if given else None
        metrics = [finetuner.finetune(*agent, agent_features=features) for _ in range(3)]
        runs.append((metrics, [p.detach().clone() for p in model.head_parameters()]))
    (m_frames, p_frames), (m_given, p_given) = runs
    assert m_frames == m_given
    for p, q in zip(p_frames, p_given):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
