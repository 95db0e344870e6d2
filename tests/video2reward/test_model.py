import json
import math
from pathlib import Path

import pytest
import torch

from video2reward import CheckpointError, ProgressModel, load_reward_model, save_reward_model
from video2reward.checkpoint import infer_config
from video2reward.losses import gaussian_entropy
from video2reward.methods.progressor import DISTANCE_EPS, HEAD_INPUTS, log_distance
from video2reward.model import CONVNETS, ConvNet

# Names and shapes of the two released checkpoints (copied from the project's shared/ folder).
KEYS = json.loads((Path(__file__).resolve().parents[1] / "data" / "upstream_checkpoint_keys.json").read_text())


def frames(n, size=84, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return ProgressModel("convnet", image_size=48)


def upstream_state_dict(variant_prefix: str) -> dict[str, torch.Tensor]:
    (name,) = [k for k in KEYS if k.startswith(variant_prefix)]
    g = torch.Generator().manual_seed(1)
    return {k: (0.05 * torch.randn(shape, generator=g) if shape else torch.tensor(3)) for k, shape in KEYS[name].items()}


@pytest.mark.parametrize("variant,wrapper", [("resnet18_84", "state_dict"), ("resnet34_224", "model_state_dict")])
def test_released_formats_load_strict(tmp_path, variant, wrapper):
    sd = upstream_state_dict(variant)
    sd = {k: (v.abs() + 0.1 if k.endswith("running_var") else v) for k, v in sd.items()}
    payload = {wrapper: sd}
    if wrapper == "state_dict":
        payload["optim_state_dict"] = {"state": {}, "param_groups": []}
    else:
        payload.update(optimizer_state_dict={"state": {}, "param_groups": []}, epoch=7)
    path = tmp_path / "released.pth"
    torch.save(payload, path)
    model = load_reward_model(path)
    assert model.config.backbone == variant
    own = model.state_dict()
    assert set(own) == set(sd)
    for k, v in sd.items():
        assert torch.equal(own[k].cpu(), v.to(own[k].dtype)), k
    size = model.image_size
    assert size == (84 if variant == "resnet18_84" else 224)
    dist = model.predict(frames(2, size), frames(2, size, 1), frames(2, size, 2))
    assert dist.batch_shape == (2,)


def test_module_names_match_upstream():
    for variant in ("resnet18_84", "resnet34_224"):
        (name,) = [k for k in KEYS if k.startswith(variant)]
        own = {k: list(v.shape) for k, v in ProgressModel(variant).state_dict().items()}
        assert own == KEYS[name]


def test_wrong_keys_one_line_error(tmp_path):
    sd = ProgressModel("resnet18_84").state_dict()
    sd.pop("fc_mu.bias")
    sd["extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": sd}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_reward_model(tmp_path / "bad.pth")
    msg = str(err.value)
    assert "\n" not in msg and "fc_mu.bias" in msg and "extra.weight" in msg and "bad.pth" in msg


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_reward_model(tmp_path / "nope.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt.pth"):
        load_reward_model(tmp_path / "corrupt.pth")
    torch.save({"weights": {}}, tmp_path / "nokeys.pth")
    with pytest.raises(CheckpointError, match="no model weights"):
        load_reward_model(tmp_path / "nokeys.pth")


def test_save_load_round_trip(tmp_path, small):
    path = save_reward_model(small, tmp_path / "m.pth", step=12)
    loaded = load_reward_model(path)
    assert loaded.config == small.config and not loaded.amp, "inference must default to fp32"
    a, b, c = frames(3, 48), frames(3, 48, 1), frames(3, 48, 2)
    torch.testing.assert_close(loaded.predict(a, b, c).loc, small.predict(a, b, c).loc)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pth"]


def test_input_contract(small):
    good = frames(2, 48)
    with pytest.raises(TypeError, match="uint8"):
        small.predict(good.float(), good, good)
    with pytest.raises(ValueError, match=r"\(N, 3, 48, 48\)"):
        small.predict(frames(2, 64), frames(2, 64), frames(2, 64))
    with pytest.raises(ValueError, match="batch sizes"):
        small.predict(good, good[:1], good)


def test_predict_reward_and_cached_head_agree(small):
    a, b, c = frames(4, 48), frames(4, 48, 1), frames(4, 48, 2)
    dist = small.predict(a, b, c)
    assert dist.batch_shape == (4,) and (dist.scale > 0).all()
    feats = small.encode(torch.cat([a, b, c]))
    assert feats.shape == (12, 128)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(12))
    # init/goal cached once, broadcast against a batch of current frames
    cached = small.predict_from_features(feats[0], feats[4:8], feats[8])
    ref = small.predict(a[:1].expand(4, -1, -1, -1), b, c[:1].expand(4, -1, -1, -1))
    torch.testing.assert_close(cached.loc, ref.loc, atol=1e-5, rtol=1e-5)
    r = small.reward(a, b, c)
    torch.testing.assert_close(r, dist.loc - 0.4 * dist.entropy(), atol=1e-5, rtol=1e-5)
    r2 = small.reward(a, b, c, alpha=2.0)
    torch.testing.assert_close(r2, dist.loc - 2.0 * dist.entropy(), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(r, r2)


def test_inference_uses_eval_mode_and_restores(small):
    a = frames(2, 48)
    small.train()
    before = small.model.body[1].running_mean.clone()
    small.predict(a, a, a)
    assert small.training, "inference must restore the training mode"
    assert torch.equal(before, small.model.body[1].running_mean), "inference must not update BatchNorm statistics"
    one = small.predict(a[:1], a[:1], a[:1]).loc
    two = small.predict(a, a, a).loc[:1]
    torch.testing.assert_close(one, two)  # eval mode: no dependence on the rest of the batch


def test_softplus_sigma_is_safe():
    m = ProgressModel("convnet", image_size=32)
    with torch.no_grad():
        m.fc_log_var.bias.fill_(1e4)
        m.fc_log_var.weight.zero_()
    dist = m.predict(frames(1, 32), frames(1, 32), frames(1, 32))
    assert torch.isfinite(dist.scale).all() and math.isclose(dist.scale.item(), 1e4, rel_tol=1e-3)
    torch.testing.assert_close(gaussian_entropy(torch.tensor(1.0)), torch.tensor(0.5 * math.log(2 * math.pi * math.e)))


def test_bf16_close_to_fp32(small):
    """bf16 autocast (``--precision bf16``) moves mu by at most 0.02 here (bf16 keeps 8 bits of
    mantissa; the head runs in fp32). Inference defaults to fp32, so this is opt-in."""
    a, b, c = frames(4, 48), frames(4, 48, 1), frames(4, 48, 2)
    assert not small.amp
    ref = small.predict(a, b, c)
    small.amp = True
    try:
        fast = small.predict(a, b, c)
    finally:
        small.amp = False
    assert (fast.loc - ref.loc).abs().max() < 0.02
    assert ((fast.scale - ref.scale).abs() / ref.scale).max() < 0.05


@pytest.mark.parametrize("backbone", sorted(CONVNETS))
def test_small_backbones_bare_state_dict_round_trip(tmp_path, backbone):
    """A bare state dict of any CPU conv net is recognised by its shapes and loads strictly."""
    torch.manual_seed(0)
    model = ProgressModel(backbone, amp=False)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "bare.pth")
    loaded = load_reward_model(tmp_path / "bare.pth", amp=False)
    assert loaded.config.backbone == backbone
    a, b, c = frames(2), frames(2, seed=1), frames(2, seed=2)
    torch.testing.assert_close(loaded.predict(a, b, c).loc, model.predict(a, b, c).loc)


def test_unknown_convnet_shapes_and_bad_strides_are_named():
    sd = ProgressModel("convnet_spatial").state_dict()
    sd["model.body.0.weight"] = torch.zeros(24, 3, 3, 3)
    with pytest.raises(CheckpointError, match="match none of"):
        infer_config(sd)
    with pytest.raises(ValueError, match="one stride per layer"):
        ConvNet(widths=(8, 8), strides=(2,))


@pytest.mark.parametrize("size", [32, 48, 84, 100])
def test_spatial_convnet_any_size(size):
    """The spatial conv net pools its last map to a fixed 6x6 grid, so any input size works."""
    model = ProgressModel("convnet_spatial", image_size=size)
    assert model.encode(frames(3, size)).shape == (3, 128)
    # where things are matters: a bright square moved across the image changes the feature
    img = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    q = size // 4
    img[0, :, :q, :q] = 255
    img[1, :, -q:, -q:] = 255
    f = model.encode(img)
    assert (f[0] - f[1]).norm() > 1e-3


def test_log_distance_is_smooth_and_finite_at_equal_features():
    a = torch.nn.functional.normalize(torch.randn(3, 128), dim=-1).requires_grad_()
    d = log_distance(a, a.detach())
    torch.testing.assert_close(d, torch.full((3, 1), math.log(DISTANCE_EPS)))
    d.sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().max() == 0
    b = torch.nn.functional.normalize(torch.randn(3, 128), dim=-1)
    expected = 0.5 * torch.log((a.detach() - b).norm(dim=-1, keepdim=True) ** 2 + DISTANCE_EPS ** 2)
    torch.testing.assert_close(log_distance(a.detach(), b), expected)


def test_distance_head_uses_the_distances_and_round_trips(tmp_path):
    """The "distance" head takes 3 extra inputs, is told apart from "concat" by its shapes in a bare
    state dict, and its output depends on the log distances, not only on the concatenated features."""
    torch.manual_seed(0)
    model = ProgressModel("convnet_spatial", head="distance", amp=False)
    assert model.proj[0].fc1.in_features == HEAD_INPUTS["distance"] == HEAD_INPUTS["concat"] + 3
    f = torch.nn.functional.normalize(torch.randn(4, 128), dim=-1)
    g = torch.nn.functional.normalize(torch.randn(4, 128), dim=-1)
    base = model.head(f, g, f)[0]
    with torch.no_grad():  # zero the weights of the three distance inputs: the output must move
        model.proj[0].fc1.weight[:, -3:] = 0
        model.proj[0].skip.weight[:, -3:] = 0
    assert (model.head(f, g, f)[0] - base).abs().max() > 1e-4
    torch.save({"state_dict": model.state_dict()}, tmp_path / "bare.pth")
    loaded = load_reward_model(tmp_path / "bare.pth", amp=False)
    assert loaded.config.head == "distance" and loaded.config.backbone == "convnet_spatial"
    a, b, c = frames(2), frames(2, seed=1), frames(2, seed=2)
    torch.testing.assert_close(loaded.predict(a, b, c).loc, model.predict(a, b, c).loc)
    ours = load_reward_model(save_reward_model(model, tmp_path / "ours.pth"), amp=False)
    assert ours.config == model.config


def test_unknown_head_is_named():
    with pytest.raises(ValueError, match="unknown head 'sum'"):
        ProgressModel("convnet", image_size=32, head="sum")
    sd = ProgressModel("convnet_spatial").state_dict()
    sd["proj.0.fc1.weight"] = torch.zeros(512, 390)
    with pytest.raises(CheckpointError, match="takes 390 inputs"):
        infer_config(sd)
