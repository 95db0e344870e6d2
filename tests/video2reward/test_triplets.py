"""Triplet sampling, labels and augmentation (video2reward.triplets, video2reward.augment)."""
import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from video2reward import augment as aug
from video2reward.data import VideoDataset
from video2reward.triplets import (TripletSampler, parse_label_std, progress_labels, randint_below,
                                   sample_endpoints)

S = 8


def indexed_dataset(lengths, tasks=None) -> VideoDataset:
    """Frame ``t`` of trajectory ``k`` has pixel values ``(t, k, 0)`` so indices can be read back."""
    trajs = []
    for k, n in enumerate(lengths):
        f = torch.zeros(n, 3, S, S, dtype=torch.uint8)
        f[:, 0] = torch.arange(n, dtype=torch.uint8)[:, None, None]
        f[:, 1] = k
        trajs.append(f)
    return VideoDataset.from_trajectories(trajs, tasks or ["t"] * len(lengths))


def test_randomised_endpoints_cover_their_supports():
    g = torch.Generator().manual_seed(0)
    L = torch.full((20000,), 10)
    i, j, k = sample_endpoints(L, True, None, g)
    assert (i >= 0).all() and (i <= 8).all() and (k > i).all() and (k <= 9).all() and (i <= j).all() and (j <= k).all()
    assert set(i.tolist()) == set(range(9)) and set(k.tolist()) == set(range(1, 10))
    i, j, k = sample_endpoints(L, True, 3, g)  # goal in init+1 .. min(L, init+3)-1
    assert ((k - i) >= 1).all() and ((k - i) <= 2).all() and set((k - i).tolist()) == {1, 2}
    i, j, k = sample_endpoints(torch.tensor([2, 7, 7]), False, None, g)
    assert i.tolist() == [0, 0, 0] and k.tolist() == [1, 6, 6]
    assert set(randint_below(torch.full((1000,), 3), g).tolist()) == {0, 1, 2}
    i, j, k = sample_endpoints(L, True, None, g, fixed_fraction=0.3)
    fixed = (i == 0) & (k == 9)
    assert 0.3 < fixed.float().mean() < 0.36  # 30 % fixed + the random draws that hit (0, 9) by chance


def test_labels_mean_and_std():
    i, j, k = torch.tensor([0, 2, 5]), torch.tensor([0, 3, 9]), torch.tensor([4, 6, 9])
    mean, std = progress_labels(i, j, k, "delta")
    assert torch.allclose(mean, torch.tensor([0.0, 0.25, 1.0]))
    assert torch.allclose(std, torch.tensor([0.5, 0.5, 0.5]))
    _, std = progress_labels(i, j, k, 0.1)
    assert torch.allclose(std, torch.full((3,), 0.1))
    assert parse_label_std("0.1") == 0.1 and parse_label_std("DELTA") == "delta"
    with pytest.raises(ValueError):
        parse_label_std("wide")


def _check_batch(ds, batch):
    flat = batch.flat_frames
    t = flat[:, 0, 0, 0].long()  # frame index
    traj = flat[:, 1, 0, 0].long()
    for a, b in ((batch.init, batch.current), (batch.current, batch.goal)):
        assert (traj[a] == traj[b]).all() and (t[a] <= t[b]).all()
    assert (t[batch.goal] > t[batch.init]).all()
    assert (traj[batch.init] == batch.traj).all()
    expect = (t[batch.current] - t[batch.init]).float() / (t[batch.goal] - t[batch.init]).float()
    assert torch.allclose(batch.label_mean, expect)
    assert torch.allclose(batch.label_std, torch.sqrt(1 / (t[batch.goal] - t[batch.init]).float()))
    assert batch.flat_frames[batch.init].shape == (len(batch.init), 3, S, S)


@pytest.mark.parametrize("randomize", [True, False])
def test_plain_batches(randomize):
    ds = indexed_dataset([6, 9, 12])
    sampler = TripletSampler(ds, batch_size=64, randomize=randomize, seed=3)
    batch = sampler.sample_at(0)
    assert batch.frames.shape == (64, 3, 3, S, S)
    _check_batch(ds, batch)
    if not randomize:
        flat = batch.flat_frames
        assert (flat[batch.init, 0, 0, 0] == 0).all()
        assert (flat[batch.goal, 0, 0, 0].long() == torch.as_tensor(ds.lengths)[batch.traj] - 1).all()
    assert torch.equal(batch.negative, batch.current.roll(1))


@pytest.mark.parametrize("randomize,max_gap,fixed_fraction", [(True, None, 0.0), (True, 4, 0.0), (False, None, 0.0),
                                                              (True, None, 0.5)])
def test_shared_embedding_batches(randomize, max_gap, fixed_fraction):
    ds = indexed_dataset([6, 9, 12, 30])
    sampler = TripletSampler(ds, batch_size=40, randomize=randomize, max_gap=max_gap, shared_embedding=True,
                             frames_per_traj=5, trajs_per_batch=4, seed=1, fixed_fraction=fixed_fraction)
    for step in range(5):
        batch = sampler.sample_at(step)
        g, k = batch.frames.shape[:2]
        assert g == 4 and k == (min(5, max_gap) if max_gap else 5) and len(batch.init) == 40
        _check_batch(ds, batch)
        t = batch.frames[:, :, 0, 0, 0].long()
        assert (t[:, 1:] > t[:, :-1]).all()  # distinct, sorted frames per trajectory
        if max_gap:
            assert ((t[:, -1] - t[:, 0]) < max_gap).all()
        if not randomize or fixed_fraction:
            lengths = torch.as_tensor(ds.lengths)[batch.frames[:, 0, 1, 0, 0].long()]
            assert (t[:, 0] == 0).all() and (t[:, -1] == lengths - 1).all()
        # triplet b is in group b % G, so the rolled middle frame comes from another group
        group = torch.arange(40) % g
        assert torch.equal(batch.init // k, group) and torch.equal(batch.negative // k, group.roll(1))


def test_sampling_is_reproducible_and_task_balanced():
    ds = indexed_dataset([5] * 9 + [7], tasks=["big"] * 9 + ["small"])
    sampler = TripletSampler(ds, batch_size=2000, seed=7)
    a, b = sampler.sample_at(11), sampler.sample_at(11)
    assert all(x is y is None or torch.equal(x, y) for x, y in zip(a, b))  # (no negatives: None in both)
    assert not torch.equal(sampler.sample_at(12).traj, a.traj)
    assert not torch.equal(sampler.sample_at(11, rank=1).traj, a.traj)
    share_small = (a.traj == 9).float().mean().item()
    assert 0.45 < share_small < 0.55  # tasks drawn uniformly, not trajectories
    unbalanced = TripletSampler(ds, batch_size=2000, balance_tasks=False, seed=7).sample_at(0)
    assert (unbalanced.traj == 9).float().mean().item() < 0.2


# ---------------------------------------------------------------------------------------- augment
def frames(n, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_augment_shapes_dtype_and_determinism():
    x = frames(12).view(4, 3, 3, 16, 16)
    a = aug.augment(x, aug.EPIC, size=12, generator=torch.Generator().manual_seed(0))
    b = aug.augment(x, aug.EPIC, size=12, generator=torch.Generator().manual_seed(0))
    assert a.shape == (4, 3, 3, 12, 12) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert aug.augment(frames(5), aug.METAWORLD).shape == (5, 3, 16, 16)
    with pytest.raises(TypeError):
        aug.augment(x.float())


def test_identity_crop_and_flip_are_exact():
    x = frames(6)
    identity = aug.AugmentConfig(photometric=False, crop_scale=(1, 1), crop_ratio=(1, 1))
    assert torch.equal(aug.augment(x, identity), x)
    flip = aug.AugmentConfig(photometric=False, crop_scale=(1, 1), crop_ratio=(1, 1), hflip_p=1.0)
    assert torch.equal(aug.augment(x, flip), x.flip(-1))


def test_shift_is_a_whole_pixel_translation_with_replicated_border():
    x = frames(6)
    out = aug.augment(x[:, None].expand(6, 2, 3, 16, 16), aug.SHIFT, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[:, 0], out[:, 1])  # shared by the group
    padded = torch.nn.functional.pad(x.float(), (4, 4, 4, 4), mode="replicate").to(torch.uint8)
    windows = {(dy, dx): padded[..., 4 + dy:20 + dy, 4 + dx:20 + dx] for dy in range(-4, 5) for dx in range(-4, 5)}
    for n in range(6):  # every output is exactly one of the 81 integer shifts of its input
        assert any(torch.equal(out[n, 0], w[n]) for w in windows.values())


def test_geometry_is_shared_within_a_group_photometry_is_not():
    one = frames(1)
    group = one[None].expand(8, 3, 3, 16, 16).contiguous()  # 8 groups of 3 identical frames
    out = aug.augment(group, aug.CROP_ONLY, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(out[g, 0], out[g, j]) for g in range(8) for j in range(3))  # same crop in a group
    assert not torch.equal(out[0, 0], out[1, 0])  # different crops across groups
    colour = aug.AugmentConfig(jitter_p=1.0, blur_p=0.0, crop_scale=(1, 1), crop_ratio=(1, 1))
    out = aug.augment(group, colour, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(out[0, 0], out[0, 1])  # each frame its own colour jitter


@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation"])
def test_colour_ops_match_torchvision(op):
    x = (frames(4).float() * 0.3 + 90).round().to(torch.uint8)  # mid-range: no clipping
    params = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    params[op] = 0.3
    cfg = aug.AugmentConfig(jitter_p=1.0, grayscale_p=0.0, **params)
    m, t = aug.color_transform(x.float().mean((2, 3)), cfg, torch.Generator().manual_seed(5))
    ours = torch.einsum("nij,njhw->nihw", m, x.float()) + t[:, :, None, None]
    # recover each frame's factor from the matrix and compare with torchvision's op
    for n in range(4):
        if op == "brightness":
            f = m[n, 0, 0].item()
            ref = TF.adjust_brightness(x[n].float() / 255, f) * 255
        elif op == "contrast":
            f = m[n, 0, 0].item()
            ref = TF.adjust_contrast(x[n].float() / 255, f) * 255
        else:
            f = (m[n, 0, 0].item() - aug.LUMA[0]) / (1 - aug.LUMA[0])
            ref = TF.adjust_saturation(x[n].float() / 255, f) * 255
        assert abs(f - 1) <= 0.3 + 1e-6
        assert torch.allclose(ours[n], ref, atol=0.6), op  # torchvision rounds luma to uint8 levels


def test_hue_rotation_keeps_luma_and_grayscale_is_gray():
    x = frames(3).float()
    rotated = torch.einsum("nij,njhw->nihw", aug.hue_matrix(torch.tensor([0.0, 0.1, -0.1])), x)
    luma = torch.tensor(aug.LUMA).view(1, 3, 1, 1)
    assert torch.allclose((rotated * luma).sum(1), (x * luma).sum(1), atol=1e-3)
    assert torch.allclose(rotated[0], x[0], atol=1e-4)
    cfg = aug.AugmentConfig(jitter_p=0.0, grayscale_p=1.0, blur_p=0.0, crop_scale=(1, 1), crop_ratio=(1, 1))
    out = aug.augment(frames(3), cfg).int()
    assert (out.max(1).values - out.min(1).values).max() <= 1


def test_blur_and_resample_match_torch():
    x = torch.rand(4, 3, 20, 20)
    blur = aug.blur_matrix(torch.full((4,), 1.3), 20, 3)
    ours = blur[:, None] @ x @ blur.transpose(1, 2)[:, None]
    assert torch.allclose(ours, TF.gaussian_blur(x, [7, 7], [1.3, 1.3]), atol=1e-5)
    scale, center = torch.tensor([0.9, -0.6, 0.5, 1.0]), torch.tensor([0.05, 0.2, -0.4, 0.0])
    theta = torch.zeros(4, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = scale, center, scale.abs(), center
    grid = torch.nn.functional.affine_grid(theta, [4, 3, 12, 12], align_corners=False)
    ref = torch.nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="border")
    rows = aug.resample_matrix(scale.abs(), center, 12, 20)
    cols = aug.resample_matrix(scale, center, 12, 20)
    assert torch.allclose(rows[:, None] @ x @ cols.transpose(1, 2)[:, None], ref, atol=1e-5)


def test_crop_params_respect_scale_range():
    p = aug.crop_params(5000, aug.EPIC, torch.Generator().manual_seed(0))
    area = p[:, 0].abs() * p[:, 2]
    assert area.min() >= 0.2 - 1e-4 and area.max() <= 1 + 1e-4
    assert 0.4 < (p[:, 0] < 0).float().mean() < 0.6  # EPIC flips half the time
    assert (p[:, 1].abs() <= 1 - p[:, 0].abs() + 1e-6).all()
    assert math.isclose(float(aug.crop_params(100, aug.METAWORLD)[:, 0].min() > 0), 1.0)
