"""Pretraining, resume, DDP, the CLI and evaluation (video2reward.train, video2reward.evaluate)."""
import csv
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from video2reward import load_reward_model
from video2reward.data import VideoDataset, recorded_image_size
from video2reward.evaluate import evaluate, plot_progress, rankdata, spearman
from video2reward.methods.progressor import ProgressModel
from video2reward.precision import resolve_precision
from video2reward import augment as aug
from video2reward.train import PRESETS, RANK_WEIGHT, TrainConfig, augmentation_config, config_from_args, lr_at, main, pretrain

REPO = Path(__file__).resolve().parents[2]
SIZE = 32


def progress_frame(t: float, size: int = SIZE, colour=(40, 90, 160)) -> np.ndarray:
    """A frame whose white bar's width shows progress ``t`` in [0, 1]."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = colour
    img[size // 3: 2 * size // 3, : max(1, round(t * size))] = 255
    return img


def write_demos(root: Path, tasks=("reach", "drawer-open"), n_train=3, n_test=2, length=10, ext=".png",
                with_splits=True) -> Path:
    rng = np.random.default_rng(0)
    for task in tasks:
        for split, n in (("train", n_train), ("test", n_test)):
            for j in range(n):
                folder = (root / task / split / str(j)) if with_splits else (root / f"{task}_{split}_{j:02d}")
                folder.mkdir(parents=True, exist_ok=True)
                colour = tuple(int(c) for c in rng.integers(0, 200, 3))
                for i in range(length):
                    name = str(i) if with_splits else f"frame_{i:06d}"
                    Image.fromarray(progress_frame(i / (length - 1), colour=colour)).save(folder / f"{name}{ext}")
    return root


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    return write_demos(tmp_path_factory.mktemp("demos") / "mw")


def tiny(data_path, output_dir, **kw) -> TrainConfig:
    base = dict(data_path=str(data_path), output_dir=str(output_dir), backbone="convnet", image_size=SIZE,
                batch_size=8, steps=2, warmup_steps=1, frames_per_traj=4, trajs_per_batch=2, num_workers=0,
                progress_bar=False, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("shared,precision", [(True, "bf16"), (False, "auto")])
def test_pretrain_writes_loadable_checkpoint_logs_and_metrics(demos, tmp_path, shared, precision, capsys):
    out = tmp_path / "run"
    path = pretrain(tiny(demos, out, shared_embedding=shared, precision=precision, negatives=True))
    assert f"precision: {resolve_precision(precision).name} (" in capsys.readouterr().out
    assert path == out / "checkpoint_last.pth"
    model = load_reward_model(path)
    assert model.config.backbone == "convnet" and model.image_size == SIZE
    x = torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8)
    assert model.predict(x, x, x).loc.shape == (2,)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 2 and "optimizer" in ckpt and isinstance(ckpt["rng"]["torch"], torch.Tensor)
    assert ckpt["train_config"]["shared_embedding"] is shared
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"reach", "drawer-open"} and metrics["split"] == "test"
    assert metrics["overall"]["num_trajectories"] == 4 and -1 <= metrics["overall"]["voc"] <= 1
    assert (out / "progress.png").stat().st_size > 1000
    rows = read_csv(out / "train_log.csv")
    assert [r["step"] for r in rows] == ["1", "2"] and "kl_negative" in rows[0]
    assert json.loads((out / "config.json").read_text())["precision"] == precision
    assert any((out / "tb").iterdir())


def test_epic_layout_and_video_files(tmp_path):
    epic = write_demos(tmp_path / "epic", tasks=("P01",), n_train=9, n_test=1, ext=".jpg", with_splits=False)
    pretrain(tiny(epic, tmp_path / "run_epic", augmentation="epic", label_std=0.1, negatives=True, steps=1))
    metrics = json.loads((tmp_path / "run_epic" / "metrics.json").read_text())
    assert metrics["overall"]["num_trajectories"] == 1  # 10 sorted videos: 9 train, 1 test

    import imageio.v3 as iio

    videos = tmp_path / "videos"
    videos.mkdir()
    for k in range(3):
        clip = np.stack([progress_frame(i / 7) for i in range(8)])
        iio.imwrite(videos / f"clip{k}.mp4", clip, fps=10, plugin="FFMPEG", macro_block_size=1)
    path = pretrain(tiny(videos, tmp_path / "run_video", steps=1, shared_embedding=False))
    assert load_reward_model(path).image_size == SIZE


def test_resume_is_exact(demos, tmp_path):
    """N steps straight == N/2 steps, then --resume for the other N/2 (weights and optimiser state),
    with the first half prepared by a worker process and the second inline."""
    straight = pretrain(tiny(demos, tmp_path / "a", steps=4, final_eval=False))
    pretrain(tiny(demos, tmp_path / "b", steps=2, final_eval=False, num_workers=1))
    resumed = pretrain(tiny(demos, tmp_path / "b", steps=4, final_eval=False, resume="auto"))
    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    assert a["step"] == b["step"] == 4
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for pid, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][key]), (pid, key)
    assert [r["step"] for r in read_csv(tmp_path / "b" / "train_log.csv")] == ["1", "2", "3", "4"]
    with pytest.raises(FileNotFoundError, match="--resume checkpoint not found"):
        pretrain(tiny(demos, tmp_path / "c", resume=str(tmp_path / "nope.pth")))


def test_time_limit_stops_early_then_saves(demos, tmp_path):
    path = pretrain(tiny(demos, tmp_path / "t", steps=10_000, time_limit=1e-6, final_eval=False, threads=1))
    step = torch.load(path, weights_only=True)["step"]
    assert 1 <= step < 10_000


def test_cli_subprocess_from_root_and_package_folder(demos, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    args = ["--data_path", str(demos), "--steps", "1", "--batch_size", "4", "--image_size", str(SIZE),
            "--frames_per_traj", "3", "--trajs_per_batch", "2", "--num_workers", "0", "--normalize_prediction",
            "--randomize", "--augment", "--label_std", "0.1", "--no_amp"]
    root_run = subprocess.run([sys.executable, "Video2Reward/main_ours.py", *args, "--output_dir", str(tmp_path / "o1")],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert root_run.returncode == 0, root_run.stderr[-2000:]
    assert "VOC" in root_run.stdout and load_reward_model(tmp_path / "o1" / "checkpoint_last.pth")
    inner = subprocess.run([sys.executable, "main_ours.py", *args, "--output_dir", str(tmp_path / "o2"), "--no_final_eval"],
                           cwd=REPO / "Video2Reward", env=env, capture_output=True, text=True, timeout=300)
    assert inner.returncode == 0, inner.stderr[-2000:]
    assert (tmp_path / "o2" / "checkpoint_last.pth").is_file() and not (tmp_path / "o2" / "metrics.json").exists()


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt"])
def test_cli_bad_input_is_one_line_error(tmp_path, case, capsys):
    data = tmp_path / "d"
    if case == "empty":
        data.mkdir()
    elif case == "corrupt":
        write_demos(data, tasks=("reach",), n_train=1, n_test=1, length=3)
        (data / "reach" / "train" / "0" / "1.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(SystemExit) as info:
        main(["--data_path", str(data), "--output_dir", str(tmp_path / "o"), "--steps", "1"])
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert {"missing": "not found", "empty": "empty", "corrupt": "1.png: unreadable image"}[case] in message


def test_config_from_args_presets_and_overrides():
    cfg = config_from_args(["--data_path", "d"])
    assert cfg == TrainConfig(data_path="d")
    paper = config_from_args(["--data_path", "d", "--preset", "metaworld-paper", "--lr", "1e-4"])
    assert paper.backbone == "resnet18_84" and paper.steps == 10_000 and paper.lr == 1e-4
    epochs = config_from_args(["--data_path", "d", "--epochs", "3", "--warmup_epochs", "0.5", "--label_std", "0.1",
                               "--no_amp", "--no-shared_embedding", "--resume"])
    assert epochs.steps is None and epochs.warmup_steps is None and epochs.epochs == 3 and epochs.label_std == 0.1
    assert epochs.precision == "fp32" and not epochs.shared_embedding and epochs.resume == "auto"
    assert cfg.precision == "auto"
    assert config_from_args(["--data_path", "d", "--precision", "bf16"]).precision == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(data_path="d", precision="fp16")
    assert PRESETS["epic"]["negatives"] and config_from_args(["--data_path", "d", "--preset", "epic"]).label_std == 0.1
    with pytest.raises(SystemExit):
        config_from_args(["--data_path", "d", "--label_std", "wide"])
    with pytest.raises(SystemExit):
        config_from_args(["--data_path", "d", "--no-normalize_prediction"])


def test_shift_pixels_sets_the_shift_range():
    two = augmentation_config(config_from_args(["--data_path", "d", "--shift_pixels", "2"]))
    assert two.shift == 2 and not two.photometric
    assert augmentation_config(TrainConfig(data_path="d", shift_pixels=4)).shift == 4
    # other recipes are not touched by the shift size
    assert augmentation_config(TrainConfig(data_path="d", augmentation="metaworld", shift_pixels=2)) == aug.METAWORLD
    x = torch.arange(8 * 8, dtype=torch.uint8).view(1, 1, 1, 8, 8).expand(200, 1, 3, 8, 8)
    out = aug.augment(x, two, generator=torch.Generator().manual_seed(0))
    moved = {int((out[i, 0, 0] == x[0, 0, 0]).all()) for i in range(200)}
    assert moved == {0, 1}  # some frames shifted, some not
    # a +-2 shift never moves pixel (3, 3) of the 8x8 ramp further than 2 rows/columns
    centre = out[:, 0, 0, 3, 3].long()
    rows, cols = centre // 8, centre % 8
    assert (rows - 3).abs().max() <= 2 and (cols - 3).abs().max() <= 2 and (rows - 3).abs().max() == 2
    with pytest.raises(ValueError, match="shift_pixels"):
        TrainConfig(data_path="d", shift_pixels=-1)


def test_sigma_power_flag():
    assert config_from_args(["--data_path", "d", "--sigma_power", "2"]).sigma_power == 2.0
    with pytest.raises(ValueError, match="sigma_power"):
        TrainConfig(data_path="d", sigma_power=-1)


def test_rank_weight_adds_the_order_loss(demos, tmp_path):
    assert config_from_args(["--data_path", "d", "--rank_weight", "0.5"]).rank_weight == 0.5
    # default: on for shared-embedding batches (the CPU preset), off for per-triplet ones (paper, EPIC)
    assert TrainConfig(data_path="d").rank_weight == RANK_WEIGHT > 0
    assert TrainConfig(data_path="d", shared_embedding=False).rank_weight == 0
    assert config_from_args(["--data_path", "d", "--preset", "metaworld-paper"]).rank_weight == 0
    with pytest.raises(ValueError, match="rank_weight"):
        TrainConfig(data_path="d", rank_weight=-1)
    with pytest.raises(ValueError, match="shared_embedding"):
        TrainConfig(data_path="d", rank_weight=1, shared_embedding=False)
    out = tmp_path / "rank"
    pretrain(tiny(demos, out, rank_weight=1.0, negatives=True, final_eval=False))
    rows = read_csv(out / "train_log.csv")
    assert all(float(r["rank"]) >= 0 for r in rows)
    # loss = KL + 0.05 * negative KL + 1.0 * order loss, all logged per step (log_every=1)
    for r in rows:
        expect = float(r["kl"]) + 0.05 * float(r["kl_negative"]) + float(r["rank"])
        assert float(r["loss"]) == pytest.approx(expect, rel=1e-4)


def test_head_flag_trains_and_guards_resume(demos, tmp_path):
    # default: the distance head for the CPU preset, the released layout on request
    assert TrainConfig(data_path="d").head == "distance"
    assert config_from_args(["--data_path", "d", "--head", "concat"]).head == "concat"
    for preset in ("metaworld-paper", "epic"):  # the released layouts keep the released head
        assert config_from_args(["--data_path", "d", "--preset", preset]).head == "concat"
    with pytest.raises(SystemExit):
        config_from_args(["--data_path", "d", "--head", "sum"])
    path = pretrain(tiny(demos, tmp_path / "h", head="distance", final_eval=False))
    assert load_reward_model(path).config.head == "distance"
    with pytest.raises(ValueError, match="checkpoint holds .*head='distance'.* but the run builds .*head='concat'"):
        pretrain(tiny(demos, tmp_path / "h", head="concat", steps=3, final_eval=False, resume="auto"))


def test_lr_warmup_then_constant():
    assert [lr_at(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_at(0, 2e-4, 0) == 2e-4
    cosine = [lr_at(s, 1.0, 2, 10, "cosine") for s in range(11)]
    assert cosine[:3] == [0.5, 1.0, 1.0] and cosine[6] == pytest.approx(0.5) and cosine[10] == 0.0
    assert all(a >= b for a, b in zip(cosine[1:], cosine[2:]))


def test_push_to_hub_flag_calls_hub(demos, tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("video2reward.hub")
    fake.push_to_hub = lambda path, repo, dry_run=False: calls.append((Path(path), repo))
    monkeypatch.setitem(sys.modules, "video2reward.hub", fake)
    main(["--data_path", str(demos), "--output_dir", str(tmp_path / "o"), "--steps", "1", "--batch_size", "4",
          "--image_size", str(SIZE), "--num_workers", "0", "--no_final_eval", "--push_to_hub", "me/progressor"])
    assert calls == [(tmp_path / "o" / "checkpoint_last.pth", "me/progressor")]


@pytest.mark.slow
def test_ddp_two_processes_gloo(demos, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "Video2Reward/main_ours.py", "--data_path", str(demos), "--output_dir", str(out), "--steps", "2",
           "--batch_size", "4", "--image_size", str(SIZE), "--frames_per_traj", "3", "--trajs_per_batch", "2",
           "--num_workers", "0", "--log_every", "1", "--distributed", "--device", "cpu"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-3000:])
    assert "x 2 process(es)" in run.stdout
    assert [r["step"] for r in read_csv(out / "train_log.csv")] == ["1", "2"]  # rank 0 alone writes
    assert torch.load(out / "checkpoint_last.pth", weights_only=True)["step"] == 2
    assert (out / "metrics.json").is_file()


# ---------------------------------------------------------------------------------------- evaluation
def test_spearman_and_ranks():
    assert rankdata(np.array([3.0, 1.0, 1.0, 2.0])).tolist() == [3.0, 0.5, 0.5, 2.0]
    assert spearman(np.arange(5), np.arange(5)) == pytest.approx(1.0)
    assert spearman(np.arange(5), -np.arange(5.0)) == pytest.approx(-1.0)
    assert spearman(np.array([1.0, 3.0, 2.0, 4.0]), np.arange(4)) == pytest.approx(0.8)
    assert spearman(np.ones(4), np.arange(4)) == 0.0


class OracleModel(ProgressModel):
    """Reads progress off the bar of :func:`progress_frame`: mu = bar width / frame width."""

    def predict_from_features(self, f_init, f_cur, f_goal):
        return torch.distributions.Normal(f_cur[:, 0], torch.full_like(f_cur[:, 0], 0.1))

    def encode(self, frames, batch_size=256):
        row = frames[:, 0, SIZE // 2].float()
        width = (row == 255).float().sum(1) / SIZE
        return torch.stack([width, torch.zeros_like(width)], 1)


def test_evaluate_reports_voc_mae_and_plots(tmp_path):
    trajs = [torch.from_numpy(np.stack([progress_frame(i / (n - 1)) for i in range(n)])).permute(0, 3, 1, 2)
             for n in (10, 17, 10)]
    ds = VideoDataset.from_trajectories(trajs, ["a", "a", "b"])
    oracle = OracleModel("convnet", image_size=SIZE)
    res = evaluate(oracle, ds)
    assert res["overall"]["voc"] == pytest.approx(1.0) and res["overall"]["mae"] < 0.05
    assert res["tasks"]["a"]["num_trajectories"] == 2 and len(res["curves"]["b"]["mu_mean"]) == 101
    assert evaluate(oracle, ds, max_trajectories_per_task=1)["overall"]["num_trajectories"] == 2
    png = plot_progress(res, tmp_path / "p.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    real = evaluate(ProgressModel("convnet", image_size=SIZE), ds)
    assert -1 <= real["overall"]["voc"] <= 1


def test_the_frame_size_the_data_records_is_the_default(tmp_path):
    """Demos that record their frame size (metadata.json) train at it, not at the backbone's 84 px."""
    data = write_demos(tmp_path / "mw", tasks=("reach",), n_train=2, n_test=1)
    (data / "reach" / "metadata.json").write_text(json.dumps({"image_size": SIZE, "task": "reach"}))
    path = pretrain(tiny(data, tmp_path / "run", image_size=None, method="tcn", batch_size=4, final_eval=False))
    assert load_reward_model(path).image_size == SIZE
    assert recorded_image_size(data) == SIZE and recorded_image_size(data, ["other"]) is None
    (data / "pick").mkdir()
    (data / "pick" / "metadata.json").write_text(json.dumps({"image_size": 84}))
    assert recorded_image_size(data) is None  # tasks disagree: the backbone's size decides
    assert recorded_image_size(data, ["reach"]) == SIZE


def test_every_setting_is_one_flag_built_from_its_declaration():
    import dataclasses

    from video2reward.config import build_parser

    options = {a.dest: a for a in build_parser(methods=True)._actions}
    for f in dataclasses.fields(TrainConfig):
        if f.metadata.get("help"):  # declared with its help: a flag of that name, with that help
            assert f.name in options and options[f.name].help.startswith(f.metadata["help"]), f.name
    assert options["label_std"].help.endswith("(default 0.025)")  # the declared default, shown
    assert options["progress_bar"].option_strings == ["--no_progress_bar"]  # released spellings kept
    assert config_from_args(["--data_path", "d", "--no-randomize", "--max_gap", "5"]).max_gap == 5
