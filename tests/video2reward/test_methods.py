"""The baselines of video2reward.methods: losses on hand-computed cases, the sign and monotonicity of
each reward on a trajectory that approaches its goal, frame rules, the model contract, checkpoints,
the training CLI on both data layouts, and the online discriminator updates."""
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from video2reward import ProgressModel, load_reward_model, save_reward_model
from video2reward.checkpoint import CheckpointError
from video2reward.config import METHOD_BATCH_SIZES, TrainConfig, build_parser, config_from_args, parse_assignments
from video2reward.data import VideoDataset
from video2reward.evaluate import evaluate, format_table, plot_progress
from video2reward.methods import (METHODS, PRETRAINABLE, REWARD_KINDS, SCORES, DiscriminatorConfig,
                                  DiscriminatorFinetuner, FrameTuples, TupleSampler, build_model)
from video2reward.methods.adversarial import discriminator_loss
from video2reward.methods.base import ordered_pair, sorted_frames
from video2reward.methods.hold import hold_r_loss, hold_reward, semi_hard_triplet_loss
from video2reward.methods.rank2reward import bradley_terry_loss
from video2reward.methods.tcn import triplet_loss
from video2reward.methods.vip import vip_loss
from video2reward.train import main, pretrain

from .test_train import write_demos

REPO = Path(__file__).resolve().parents[2]
SIZE = 32
BASELINES = [m for m in METHODS if m != "progressor"]
TRAINED = [m for m in PRETRAINABLE if m != "progressor"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks (tests/conftest.py)


def tiny_model(method: str, **fields):
    torch.manual_seed(0)
    return build_model(method, {"backbone": "convnet", "image_size": SIZE, **fields}, channels_last=False)


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# ---------------------------------------------------------------------------------------- losses
def test_triplet_loss_by_hand():
    a, p = t([0, 0], [0, 0]), t([1, 0], [1, 0])
    n = t([0, 2], [0.5, 0])  # |a-n|^2 = 4 (satisfied), 0.25 (violated: 1 - 0.25 + 0.2)
    assert triplet_loss(a, p, n, margin=0.2).item() == pytest.approx((0 + 0.95) / 2)


def test_vip_loss_by_hand():
    goal = t([0, 0], [0, 0])
    start, cur, nxt = t([3, 4], [0, 4]), t([0, 3], [1, 0]), t([0, 2], [0, 0])  # distances 5,4 / 3,1 / 2,0
    gamma = 0.5
    # (1-g) mean(5, 4) + log mean(exp(-3 + 1 + g 2), exp(-1 + 1 + g 0))
    expect = 0.5 * 4.5 + math.log((math.exp(-1) + 1) / 2)
    assert vip_loss(start, cur, nxt, goal, gamma).item() == pytest.approx(expect, rel=1e-6)


def test_hold_losses_and_reward_by_hand():
    assert hold_r_loss(t(2, 4), t(1, 4), horizon=2.0).item() == pytest.approx(((1 / 2) ** 2 + 0) / 2)
    assert hold_reward(t(3.0), t(1.0), 4.0).item() == pytest.approx(-0.5)
    assert hold_reward(t(0.5), t(1.0), 4.0).item() == 0.0  # nearer than the goal to itself: no penalty


def test_semi_hard_triplet_loss_by_hand():
    # one video, frames at t = 0, 1, 2, 10 embedded at 0, 1, 3, 2 (1-D); positives |dt| <= 1, negatives |dt| > 5
    emb, time, video = t([0], [1], [3], [2]), torch.tensor([0, 1, 2, 10]), torch.zeros(4, dtype=torch.long)
    loss, pairs = semi_hard_triplet_loss(emb, time, video, positive_radius=1, negative_radius=5, margin=0.5)
    # squared d: (0,1)=1 (0,3)=4 (1,3)=1 (2,3)=1 (1,2)=4. Pairs (a,p): (0,1) negative 3 at 4 > 1 -> 0;
    # (1,0): no negative beyond 1 -> the farthest, 1: 0.5; (1,2) and (2,1): d_ap 4, negative at 1: 3.5 each
    assert int(pairs) == 4 and loss.item() == pytest.approx((0 + 0.5 + 3.5 + 3.5) / 4)
    # two videos: frames of the other video are negatives; the semi-hard one is the nearest beyond d_ap
    emb, time, video = t([0], [1], [1.5], [3]), torch.tensor([0, 1, 0, 5]), torch.tensor([0, 0, 1, 1])
    loss, pairs = semi_hard_triplet_loss(emb, time, video, positive_radius=1, negative_radius=5, margin=2.0)
    # (0,1): negatives at 2.25 and 9 -> 2.25: 2 + 1 - 2.25; (1,0): negatives at 0.25 and 4 -> 4: 0
    assert int(pairs) == 2 and loss.item() == pytest.approx(0.75 / 2)


def test_bradley_terry_and_discriminator_losses_by_hand():
    # -log sigmoid(0 - 0) = ln 2; -log sigmoid(0 - 1) = ln(1 + e)
    assert bradley_terry_loss(t(0, 1), t(0, 0)).item() == pytest.approx((math.log(2) + math.log(1 + math.e)) / 2)
    assert discriminator_loss(t(0), t(0)).item() == pytest.approx(2 * math.log(2))
    # expert logit 2 (-log sigmoid 2), agent logit -1 (-log(1 - sigmoid(-1)) = log(1 + e^-1))
    expect = math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))
    assert discriminator_loss(t(2), t(-1)).item() == pytest.approx(expect)


# ---------------------------------------------------------------------------------------- rewards
def approach(steps: int = 11, dim: int = 128, seed: int = 0) -> torch.Tensor:
    """Features ``(steps, dim)`` moving linearly from a unit start feature to the goal's (the last row)."""
    g = torch.Generator().manual_seed(seed)
    start, goal = torch.nn.functional.normalize(torch.randn(2, dim, generator=g), dim=-1)
    w = torch.linspace(0, 1, steps)[:, None]
    return (1 - w) * start + w * goal


def fit_head(model, f: torch.Tensor, params, steps: int, lr: float = 3e-3) -> None:
    """Train ``params`` with the model's own loss on every ordered pair of the feature trajectory ``f``."""
    n = len(f)
    pairs = torch.tensor([(i, j) for i in range(n) for j in range(i + 1, n)])
    batch = FrameTuples(torch.zeros(len(pairs), 2, 0), pairs, torch.zeros(len(pairs), dtype=torch.long),
                        torch.full((len(pairs),), n))
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    for _ in range(steps):
        loss, _ = model.loss(f[pairs], batch)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("method", ["tcn", "vip", "hold_c", "hold_r", "rank2reward"])
def test_value_rises_as_the_features_approach_the_goal(method):
    model = tiny_model(method)
    f = approach()
    if method == "hold_r":  # the distance head is learned: fit it on this trajectory first
        model.config.horizon = len(f) - 1.0
        fit_head(model, f, model.head.parameters(), steps=150)
    elif method == "rank2reward":  # the utility likewise; a constant discriminator feature
        f = torch.cat([f, torch.zeros_like(f)], 1)
        # a few steps: the pair losses soon push utilities apart by tens, where log p_RF is 0 in float32
        fit_head(model, f[:, :128], model.utility.parameters(), steps=3, lr=1e-3)
    value = model.reward_from_features(f[:1], f, f[-1:])
    assert value.shape == (len(f),)
    steps = value[1:] - value[:-1]
    assert (steps > 0).all(), (method, value)
    if method in ("tcn", "vip", "hold_c", "hold_r"):  # distances to the goal: negative, 0 at the goal
        assert (value[:-1] < 0).all() and value[-1].item() == pytest.approx(0, abs=1e-3)
    if method == "vip":  # VIP's reward is the difference of values: positive on every approaching step
        assert METHODS["vip"].reward_kind == "difference" and (steps > 0).all()
    if method == "rank2reward":  # log p_RF <= 0 at every frame, log 1/2 at the initial one
        assert (value <= 0).all() and value[0].item() == pytest.approx(math.log(0.5), abs=1e-5)


def test_an_untrained_discriminator_adds_nothing_to_rank2reward():
    """Before any online update D = 1/2 on every frame: the reward is log p_RF alone, whatever the
    discriminator's features (a random head would add a unit-scale random function of the frame)."""
    model = tiny_model("rank2reward")
    f = approach()
    f = torch.cat([f, torch.randn(len(f), 128)], 1)
    value = model.reward_from_features(f[:1], f, f[-1:])
    with torch.no_grad():
        u = model.utility(f[:, :128])
    assert torch.allclose(value, F.logsigmoid(u - u[0]), atol=1e-6)
    assert torch.equal(model.discriminator.head(f[:, 128:]).detach(), torch.zeros(len(f)))


def test_gail_reward_is_positive_and_grows_with_the_logit():
    model = tiny_model("gail")
    f = approach()
    untrained = model.reward_from_features(f[:1], f, f[-1:])
    assert torch.allclose(untrained, torch.full((len(f),), math.log(2.0)))  # D = 1/2 before any data
    torch.nn.init.normal_(model.head.out.weight)  # as after some online steps: logits vary per frame
    value = model.reward_from_features(f[:1], f, f[-1:])
    with torch.no_grad():
        logits = model.head(f)
    assert (value > 0).all()
    assert torch.allclose(value, -torch.log1p(-torch.sigmoid(logits)), atol=1e-5)  # -log(1 - D)


# ---------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("method", BASELINES)
def test_model_contract(method):
    model = tiny_model(method)
    assert model.method == method and model.reward_kind in REWARD_KINDS and model.image_size == SIZE
    assert model.device == torch.device("cpu")
    cfg = asdict(model.config)
    assert cfg["method"] == method and build_model(method, cfg).config == model.config
    assert type(model).from_config(cfg).config == model.config
    frames = torch.randint(0, 256, (5, 3, SIZE, SIZE), dtype=torch.uint8)
    model.train()
    f = model.encode(frames, batch_size=2)
    assert model.training, "inference must restore the training mode"
    assert f.shape == (5, model.feature_dim) and model.encode(frames[:0]).shape == (0, model.feature_dim)
    value = model.reward_from_features(f[:1], f, f[-1:])  # (1, D) endpoints broadcast against (N, D)
    full = model.reward_from_features(f[:1].expand(5, -1), f, f[-1:].expand(5, -1))
    assert value.shape == (5,) and value.dtype == torch.float32 and torch.allclose(value, full)
    assert torch.allclose(model.reward(frames[:1].expand(5, -1, -1, -1), frames, frames[-1:].expand(5, -1, -1, -1)),
                          value, atol=1e-5)
    with pytest.raises(TypeError, match="uint8"):
        model.encode(frames.float())


def test_progress_model_has_the_contract_attributes():
    assert ProgressModel.method == "progressor" and ProgressModel.reward_kind == "value"
    assert set(METHODS) == {"progressor", "tcn", "vip", "hold_r", "hold_c", "rank2reward", "gail"}
    assert {m for m, cls in METHODS.items() if cls.finetuner_class} == {"progressor", "gail", "rank2reward"}
    assert "gail" not in PRETRAINABLE


@pytest.mark.parametrize("method", TRAINED)
def test_frame_rules(method):
    cls = METHODS[method]
    config = tiny_model(method).config
    lengths = torch.tensor([2, 3, 7, 12, 30, 101] * 20)
    idx = cls.sample_indices(config, lengths, torch.Generator().manual_seed(1))
    assert idx.dtype == torch.int64 and idx.shape[0] == len(lengths)
    assert (idx >= 0).all() and (idx < lengths[:, None]).all()
    if method == "tcn":
        anchor, pos, neg = idx.unbind(1)
        assert (pos != anchor).all() and ((pos - anchor).abs() <= config.positive_window).all()
        gap = torch.clamp(torch.clamp(lengths // 2 - 1, max=config.negative_gap), min=0)
        assert ((neg - anchor).abs() > gap).all()
    elif method == "vip":
        start, cur, nxt, goal = idx.unbind(1)
        assert ((start <= cur) & (nxt == cur + 1) & (nxt <= goal)).all()
    elif method == "hold_c":
        assert idx.shape[1] == 2 and (idx[:, 1:] > idx[:, :-1]).all()  # capped at the shortest video
    else:
        assert idx.shape[1] == 2 and (idx[:, 0] < idx[:, 1]).all()


def test_pair_and_sorted_frame_helpers_cover_their_range():
    g = torch.Generator().manual_seed(0)
    pairs = ordered_pair(torch.full((4000,), 4), g)
    counts = torch.bincount(pairs[:, 0] * 4 + pairs[:, 1], minlength=16).view(4, 4)
    seen = counts[torch.triu(torch.ones(4, 4, dtype=torch.bool), 1)].float()
    assert (seen > 0.8 * 4000 / 6).all() and counts.tril().sum() == 0  # the 6 pairs, each ~1/6
    frames = sorted_frames(torch.tensor([5, 9]), 5, g)
    assert frames[0].tolist() == [0, 1, 2, 3, 4] and (frames[1, 1:] > frames[1, :-1]).all()


def test_tuple_sampler_is_deterministic_per_step():
    data = VideoDataset.from_trajectories([torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8) for n in (5, 9)],
                                          ["a", "b"])
    model = tiny_model("vip")
    sampler = TupleSampler(data, model.sample_indices, model.config, batch_size=6, seed=3)
    a, b = sampler.sample_at(4), sampler.sample_at(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and a.frames.shape == (6, 4, 3, 8, 8)
    assert torch.equal(a.length, torch.as_tensor(data.lengths)[a.traj])
    assert torch.equal(a.frames[2, 1], data.trajectory(int(a.traj[2]))[int(a.index[2, 1])])


# ---------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("method", BASELINES)
def test_checkpoint_round_trip(tmp_path, method):
    model = tiny_model(method)
    path = save_reward_model(model, tmp_path / "m.pth", step=3)
    raw = torch.load(path, weights_only=True)
    assert raw["method"] == method and raw["config"]["method"] == method
    loaded = load_reward_model(path)
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    frames = torch.randint(0, 256, (4, 3, SIZE, SIZE), dtype=torch.uint8)
    assert torch.allclose(loaded.reward(frames, frames, frames), model.reward(frames, frames, frames), atol=1e-5)


def test_old_checkpoints_load_as_progressor_and_unknown_methods_are_named(tmp_path):
    path = save_reward_model(ProgressModel("convnet", image_size=SIZE), tmp_path / "old.pth")
    raw = torch.load(path, weights_only=True)
    del raw["method"]  # written before there were several methods
    torch.save(raw, path)
    assert type(load_reward_model(path)) is ProgressModel
    raw["method"] = "dreamreward"
    torch.save(raw, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="unknown reward method 'dreamreward'"):
        load_reward_model(tmp_path / "bad.pth")


# ---------------------------------------------------------------------------------------- evaluation
def test_evaluate_a_value_model_reports_voc_without_mae(tmp_path):
    trajs = [torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8) for n in (6, 9)]
    res = evaluate(tiny_model("hold_c"), VideoDataset.from_trajectories(trajs, ["a", "b"]))
    assert -1 <= res["overall"]["voc"] <= 1 and "mae" not in res["overall"] and "alpha" not in res
    assert set(res["curves"]["a"]) == {"time", "value_mean", "value_std"}
    assert "MAE" not in format_table(res) and plot_progress(res, tmp_path / "p.png").stat().st_size > 1000


# ---------------------------------------------------------------------------------------- training CLI
@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return {"metaworld": write_demos(root / "mw", n_train=2, n_test=1, length=8),
            "epic": write_demos(root / "epic", tasks=("P01",), n_train=9, n_test=1, length=8, ext=".jpg",
                                with_splits=False)}


def cli_args(data: Path, out: Path, method: str, *extra: str) -> list[str]:
    return ["--method", method, "--data_path", str(data), "--output_dir", str(out), "--steps", "2",
            "--backbone", "convnet", "--image_size", str(SIZE), "--batch_size", "4", "--num_workers", "0",
            "--no_progress_bar", "--precision", "fp32", "--log_every", "1", *extra]


@pytest.mark.parametrize("layout", ["metaworld", "epic"])
@pytest.mark.parametrize("method", TRAINED)
def test_each_method_trains_through_the_cli(layouts, tmp_path, method, layout, capsys):
    out = tmp_path / "run"
    path = main(cli_args(layouts[layout], out, method), methods=True)
    assert f"x 4 {method} tuples" in capsys.readouterr().out
    model = load_reward_model(path)
    assert type(model) is METHODS[method] and model.image_size == SIZE
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 2 and ckpt["method"] == method and ckpt["train_config"]["method"] == method
    rows = (out / "train_log.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 3 and "tuples_per_s" in rows[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert -1 <= metrics["overall"]["voc"] <= 1 and "mae" not in metrics["overall"]
    if method == "hold_r":  # T read off the training videos: 8 frames, 7 steps
        assert model.config.horizon == 7.0


def test_resume_of_a_baseline_is_exact(layouts, tmp_path):
    base = dict(data_path=str(layouts["metaworld"]), backbone="convnet", image_size=SIZE, batch_size=4,
                num_workers=0, progress_bar=False, precision="fp32", final_eval=False, method="hold_r")
    straight = pretrain(TrainConfig(output_dir=str(tmp_path / "a"), steps=4, **base))
    pretrain(TrainConfig(output_dir=str(tmp_path / "b"), steps=2, **base))
    resumed = pretrain(TrainConfig(output_dir=str(tmp_path / "b"), steps=4, resume="auto", **base))
    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())
    with pytest.raises(ValueError, match="checkpoint holds HoldRConfig"):
        pretrain(TrainConfig(output_dir=str(tmp_path / "b"), steps=5, resume="auto",
                             **{**base, "method": "hold_c"}))


def test_main_py_subprocess(layouts, tmp_path):
    run = subprocess.run([sys.executable, "Video2Reward/main.py", *cli_args(layouts["metaworld"], tmp_path / "o", "vip"),
                          "--method_config", "gamma=0.9", "--no_final_eval"],
                         cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert run.returncode == 0, run.stderr[-2000:]
    model = load_reward_model(tmp_path / "o" / "checkpoint_last.pth")
    assert model.method == "vip" and model.config.gamma == 0.9


def test_method_flags():
    assert parse_assignments(["margin=0.3", "clip_frames=8", "name=x"]) == {"margin": 0.3, "clip_frames": 8, "name": "x"}
    cfg = config_from_args(["--data_path", "d", "--method", "tcn", "--method_config", "margin=0.5"], methods=True)
    assert cfg.method == "tcn" and cfg.method_config == {"margin": 0.5} and cfg.batch_size == METHOD_BATCH_SIZES["tcn"]
    assert cfg.model_config().margin == 0.5 and cfg.model_config().backbone == cfg.backbone
    assert config_from_args(["--data_path", "d", "--method", "tcn", "--batch_size", "7"], methods=True).batch_size == 7
    assert config_from_args(["--data_path", "d"], methods=True) == config_from_args(["--data_path", "d"])
    assert "--method" not in build_parser().format_help()  # main_ours.py stays PROGRESSOR's
    for bad in (["--method", "tcn", "--method_config", "margn=1"], ["--method", "gail"],
                ["--method", "vip", "--method_config", "gamma=1.5"], ["--method_config", "margin=1"]):
        with pytest.raises(SystemExit):
            config_from_args(["--data_path", "d", *bad], methods=True)
    with pytest.raises(ValueError, match="method_config of tcn"):
        TrainConfig(data_path="d", method="tcn", method_config={"margn": 1})


# ---------------------------------------------------------------------------------------- online updates
def bright_and_dark(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 40, (2, n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    return 200 + noise[0], 20 + noise[1]


@pytest.mark.parametrize("method", ["gail", "rank2reward"])
def test_discriminator_update_separates_expert_from_agent_frames(method):
    model = tiny_model(method)
    expert_frames, agent_frames = bright_and_dark(24)
    expert = VideoDataset.from_trajectories([expert_frames[:12], expert_frames[12:]], "task")
    finetuner = METHODS[method].finetuner_class(model, expert, DiscriminatorConfig(lr=1e-3), seed=0)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("discriminator.")}
    model.eval()  # as RL holds it; an update trains the discriminator, then restores the mode
    test_expert, test_agent = bright_and_dark(8, seed=1)

    def gap() -> float:
        return (model.reward(test_expert, test_expert, test_expert).mean()
                - model.reward(test_agent, test_agent, test_agent).mean()).item()

    before = gap()
    for step in range(15):
        batch = agent_frames[torch.randperm(24, generator=torch.Generator().manual_seed(step))[:8]]
        metrics = finetuner.finetune(batch, batch, batch)
    assert gap() > before + 1.0 and gap() > 0
    assert metrics["disc_accuracy"] == 1.0 and metrics["disc_logit_expert"] > metrics["disc_logit_agent"]
    assert not model.training
    if method == "rank2reward":  # only the discriminator moves; the ranking stays as pretrained
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
    clone = METHODS[method].finetuner_class(model, expert, DiscriminatorConfig(lr=1e-3), seed=5)
    clone.load_state_dict(finetuner.state_dict())
    assert torch.equal(clone.generator.get_state(), finetuner.generator.get_state())


def test_updater_refuses_a_model_without_a_discriminator_or_the_wrong_size():
    expert = VideoDataset.from_trajectories([torch.zeros(4, 3, 16, 16, dtype=torch.uint8)], "task")
    with pytest.raises(TypeError, match="no discriminator"):
        DiscriminatorFinetuner(tiny_model("tcn"), expert)
    with pytest.raises(ValueError, match="16px"):
        DiscriminatorFinetuner(tiny_model("gail"), expert)


def test_the_contract_is_checked_where_a_method_is_defined():
    from video2reward.methods import MethodConfig, RewardModel, TCNConfig

    with pytest.raises(TypeError, match="declares its registry name"):
        class Nameless(RewardModel):
            config_class = TCNConfig

    with pytest.raises(TypeError, match="config of 'tcn', not 'other'"):
        class Mislabelled(RewardModel):
            method = "other"
            config_class = TCNConfig

    with pytest.raises(TypeError, match="sample_indices and loss, or pretraining"):
        class Untrainable(RewardModel):
            method = "tcn"
            config_class = TCNConfig

    with pytest.raises(TypeError, match="scores must be one of"):
        class Sequences(RewardModel):
            method = "tcn"
            config_class = TCNConfig
            scores = "sequences"
            pretrainable = False

    class Base(RewardModel, abstract=True):  # an intermediate base declares nothing
        pass

    for cls in METHODS.values():  # every registered method declares what the contract asks
        assert cls.method and issubclass(cls.config_class, MethodConfig) and cls.scores in SCORES
        assert cls.config_class().method == cls.method


def test_a_trained_model_that_is_not_a_reward_keeps_the_smaller_contract():
    from dataclasses import dataclass

    from video2reward.methods import MODELS, TRAINABLE, PretrainedConfig, PretrainedModel, RewardModel

    @dataclass
    class CounterConfig(PretrainedConfig):
        method: str = "counter"

    with pytest.raises(TypeError, match="a pretrainable model defines pretraining"):
        class Counter(PretrainedModel):
            method = "counter"
            config_class = CounterConfig

    with pytest.raises(TypeError, match="must be a MethodConfig"):  # a reward model needs the frame encoder's fields
        class Encoderless(RewardModel):
            method = "counter"
            config_class = CounterConfig
            pretrainable = False

    class Frozen(PretrainedModel):
        method = "counter"
        config_class = CounterConfig
        pretrainable = False

    assert set(METHODS) <= set(MODELS) and set(PRETRAINABLE) <= set(TRAINABLE)
    assert all(issubclass(cls, PretrainedModel) for cls in MODELS.values())
    with pytest.raises(ValueError, match="method must be one of"):  # defined, not registered
        TrainConfig(data_path="d", method="counter")
