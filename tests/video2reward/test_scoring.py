import csv
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from video2reward import ProgressModel, save_reward_model
from video2reward.data import DataError
from video2reward.evaluate import spearman
from video2reward.scoring import frame_files, iter_frames, score_frames

ROOT = Path(__file__).resolve().parents[2]
SCORE = ROOT / "Video2Reward" / "score.py"
SIZE = 32


def moving_square(t: int, n: int, height: int = 72, width: int = 96) -> np.ndarray:
    """Frame ``t`` of ``n``: a white square sliding left to right (inside the centre crop)."""
    img = np.full((height, width, 3), 40, np.uint8)
    x = int(12 + (width - 40) * t / max(n - 1, 1))
    img[28:44, x:x + 16] = 255
    return img


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ProgressModel("convnet", image_size=SIZE)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model):
    return save_reward_model(model, tmp_path_factory.mktemp("ckpt") / "model.pth")


def read_csv(path: Path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def run_score(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCORE), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_frame_folder_numeric_order(tmp_path):
    for i in (10, 2, 1, 0):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    assert [p.name for p in frame_files(tmp_path)] == ["0.png", "1.png", "2.png", "10.png"]
    frames = list(iter_frames(tmp_path, 4))
    assert [int(f[0, 0, 0]) for f in frames] == [0, 1, 2, 10] and frames[0].shape == (3, 4, 4)
    with pytest.raises(DataError, match="not found"):
        iter_frames(tmp_path / "missing", 4)
    with pytest.raises(DataError, match="not a video"):
        iter_frames(tmp_path / "notes.txt", 4)


def test_score_frames_encodes_each_frame_once(model, monkeypatch):
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (10, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    encoded = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda x, **kw: encoded.append(len(x)) or encode(x, **kw))
    curve = score_frames(model, iter(frames), batch_size=4)  # a stream of (3, S, S) frames
    assert encoded == [4, 4, 2], "init/goal default to the first/last frame: no extra encode"
    ref = model.predict(frames[:1].expand(10, -1, -1, -1), frames, frames[-1:].expand(10, -1, -1, -1))
    np.testing.assert_allclose(curve.mu, ref.loc.numpy(), atol=2e-2)
    np.testing.assert_allclose(curve.sigma, ref.scale.numpy(), atol=2e-2)
    np.testing.assert_allclose(curve.reward, curve.mu - 0.4 * (0.5 * np.log(2 * np.pi * np.e) + np.log(curve.sigma)),
                               atol=1e-5)
    assert torch.equal(curve.init_frame, frames[0]) and torch.equal(curve.goal_frame, frames[-1])
    encoded.clear()
    init, goal = frames[3], frames[5]
    curve = score_frames(model, frames, init, goal, batch_size=64, alpha=1.0)
    assert sorted(encoded) == [1, 1, 10] and curve.alpha == 1.0
    assert torch.equal(curve.goal_frame, goal)
    with pytest.raises(DataError, match="no frames"):
        score_frames(model, [])


def test_score_cli_video(tmp_path, checkpoint):
    n = 12
    video = tmp_path / "clip.mp4"
    with imageio.get_writer(video, fps=6, codec="libx264", macro_block_size=8) as writer:
        for t in range(n):
            writer.append_data(moving_square(t, n))
    out = tmp_path / "out"
    run = run_score(video, "--checkpoint", checkpoint, "--out", out, "--video", "--batch_size", 5, "--device", "cpu")
    assert run.returncode == 0, run.stderr
    rows = read_csv(out / "progress.csv")
    assert [int(r["frame"]) for r in rows] == list(range(n)) and set(rows[0]) == {"frame", "mu", "sigma", "reward"}
    assert all(float(r["sigma"]) > 0 for r in rows)
    assert Image.open(out / "progress.png").size[0] > 500
    frames = list(iio.imiter(out / "progress.mp4"))
    assert len(frames) == n and frames[0].shape[0] >= 128 and frames[0].shape[1] > frames[0].shape[0]
    assert iio.immeta(out / "progress.mp4")["fps"] == pytest.approx(6)


def test_score_cli_frame_folder_with_init_goal(tmp_path, checkpoint, model):
    n = 11
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(n):
        Image.fromarray(moving_square(t, n, 120, 160)).save(folder / f"{t}.png")  # any resolution
    goal = tmp_path / "goal.jpg"
    Image.fromarray(moving_square(n - 1, n, 240, 320)).save(goal, quality=95)
    out = tmp_path / "out"
    run = run_score(folder, "--checkpoint", checkpoint, "--out", out, "--goal", goal, "--init", folder / "0.png",
                    "--alpha", "0.0")
    assert run.returncode == 0, run.stderr
    assert "VOC" in run.stdout
    rows = read_csv(out / "progress.csv")
    assert len(rows) == n and not (out / "progress.mp4").exists()
    assert all(float(r["reward"]) == pytest.approx(float(r["mu"]), abs=1e-5) for r in rows)  # alpha 0
    # the same numbers as scoring in-process (frames in numeric order, not 0, 1, 10, 2, ...)
    from video2reward.scoring import read_image
    curve = score_frames(model, iter_frames(folder, SIZE), read_image(folder / "0.png", SIZE), read_image(goal, SIZE))
    np.testing.assert_allclose([float(r["mu"]) for r in rows], curve.mu, atol=1e-3)


def test_score_cli_errors(tmp_path, checkpoint, capsys):
    from video2reward.scoring import main

    assert main([str(tmp_path / "missing.mp4"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "missing.mp4" in err and "not found" in err and len(err.strip().splitlines()) == 1
    assert main([str(tmp_path), "--checkpoint", str(tmp_path / "none.pth"), "--out", str(tmp_path / "o")]) == 1
    assert "none.pth" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["tcn", "vip"])
def test_score_cli_with_a_baseline_model(tmp_path, method):
    """score.py takes any method's checkpoint: per-frame value and reward columns (no mu/sigma), the
    values the reward interface computes, VIP's reward being the value's change; --alpha is refused."""
    from video2reward.methods import build_model
    from video2reward.reward_fn import frame_reward

    torch.manual_seed(0)
    model = build_model(method, {"backbone": "convnet", "image_size": SIZE}, channels_last=False).eval()
    ckpt = save_reward_model(model, tmp_path / f"{method}.pth")
    n = 9
    frames = np.stack([moving_square(t, n, SIZE, SIZE).transpose(2, 0, 1) for t in range(n)])
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(n):
        Image.fromarray(frames[t].transpose(1, 2, 0)).save(folder / f"{t}.png")
    out = tmp_path / "out"
    run = run_score(folder, "--checkpoint", ckpt, "--out", out)
    assert run.returncode == 0, run.stderr
    assert f"({method}): value" in run.stdout and "VOC" in run.stdout
    rows = read_csv(out / "progress.csv")
    assert list(rows[0]) == ["frame", "value", "reward"] and len(rows) == n and (out / "progress.png").is_file()
    value = np.array([float(r["value"]) for r in rows])
    reward = np.array([float(r["reward"]) for r in rows])
    expected = frame_reward(model).score_trajectory(torch.from_numpy(frames)).value
    np.testing.assert_allclose(value, expected, atol=1e-4)
    if method == "vip":  # a difference reward: the change of value, 0 at the first frame
        np.testing.assert_allclose(reward, np.diff(value, prepend=value[0]), atol=2e-6)
    else:
        np.testing.assert_allclose(reward, value, atol=1e-6)
    run = run_score(folder, "--checkpoint", ckpt, "--out", out, "--alpha", "0.5")
    assert run.returncode == 1 and "--alpha" in run.stderr and len(run.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_trained_toy_model_gives_monotone_progress(tmp_path):
    """Pretrain a small model on toy-reach expert demos, score a held-out demo: mu rises with time."""
    pytest.importorskip("drm.envs")
    demos, run, out = tmp_path / "demos", tmp_path / "run", tmp_path / "scores"

    def check(*cmd):
        done = subprocess.run([sys.executable, *map(str, cmd)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]

    # Short episodes at action repeat 1 keep the dot moving in every frame (an expert that parks on
    # the goal leaves a plateau of identical frames that no model can order), hence --keep_failures.
    check(ROOT / "scripts" / "generate_expert_demos.py", "--tasks", "toy-reach", "--num_train", 32, "--num_test", 2,
          "--out", demos, "--seed", 0, "--image_size", SIZE, "--episode_length", 16, "--action_repeat", 1,
          "--keep_failures", "--workers", 1)
    # ~40 s on a quiet 2-core CPU: fixed endpoints (as scored below), no augmentation, a high lr
    check(ROOT / "Video2Reward" / "main_ours.py", "--data_path", demos, "--output_dir", run, "--backbone", "convnet",
          "--image_size", SIZE, "--steps", 200, "--batch_size", 128, "--lr", 2e-3, "--warmup_steps", 10,
          "--no-augment", "--no-randomize", "--frames_per_traj", 17, "--trajs_per_batch", 8, "--num_workers", 0,
          "--no_final_eval", "--seed", 0)
    check(SCORE, demos / "toy-reach" / "test" / "0", "--checkpoint", run / "checkpoint_last.pth", "--out", out)
    rows = read_csv(out / "progress.csv")
    assert len(rows) == 17
    mu = [float(r["mu"]) for r in rows]
    assert spearman(mu, range(len(mu))) > 0.8, mu
