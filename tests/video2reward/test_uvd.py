"""UVD: the decomposition (synthetic curves, minimum gap, a toy video with known phases), its CLI and
``score.py --subgoals``."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from video2reward import ProgressModel, save_reward_model
from video2reward.uvd import (UVDConfig, decompose, decompose_features, embedding_distance, local_maxima,
                              rbf_smooth)

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32


def features_of(x: np.ndarray) -> torch.Tensor:
    """1-d positions as ``(L, 1)`` features: the l2 distance to the goal is ``|x - x_goal|``."""
    return torch.as_tensor(np.asarray(x, np.float32))[:, None]


def zigzag(points: list[float], frames_per_segment: int) -> tuple[np.ndarray, list[int]]:
    """Positions moving linearly between ``points``; the frame index where each segment ends."""
    x = [points[0]]
    for a, b in zip(points[:-1], points[1:]):
        x += list(np.linspace(a, b, frames_per_segment + 1)[1:])
    return np.array(x), [frames_per_segment * (i + 1) for i in range(len(points) - 1)]


# ---------------------------------------------------------------------------------------- pieces
def test_local_maxima_are_strict_and_interior():
    assert local_maxima(np.array([3, 1, 2, 1, 2, 2, 1, 0, 5])).tolist() == [2]  # plateau and ends excluded
    assert local_maxima(np.array([0, 1])).tolist() == []


def test_rbf_smooth_is_nadaraya_watson():
    y = np.array([0.0, 0.0, 1.0, 0.0, 0.0])
    gamma = 0.5
    w = np.exp(-gamma * (np.arange(5)[:, None] - np.arange(5)[None]) ** 2)
    np.testing.assert_allclose(rbf_smooth(y, gamma), w[:, 2] / w.sum(1))
    np.testing.assert_allclose(rbf_smooth(np.full(7, 3.0), 0.08), 3.0)  # constants stay
    assert rbf_smooth(y, 100.0)[2] == pytest.approx(1.0)  # a narrow kernel keeps the curve


def test_distances():
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    np.testing.assert_allclose(embedding_distance(f, f[2]), [2.0, np.sqrt(13), 0.0])
    np.testing.assert_allclose(embedding_distance(f, f[2], "cosine"), [0.0, 1.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="distance"):
        UVDConfig(distance="manhattan")
    with pytest.raises(ValueError, match="min_gap"):
        UVDConfig(min_gap=-1)


# ---------------------------------------------------------------------------------------- decomposition
def test_synthetic_curve_with_known_maxima():
    """Away from the goal, then towards it, twice, at equal speeds (so the smoothed peaks stay at the
    turns): the distance to the final goal peaks at frame 40, the distance to frame 40 at frame 20."""
    x, ends = zigzag([0.8, 0.2, 0.8, 0.2], 20)  # ends 20, 40, 60
    d = decompose_features(features_of(x), UVDConfig(min_gap=10))
    assert d.subgoals == (20, 40, 60) and d.num_frames == 61
    assert [c.goal for c in d.curves] == [60, 40, 20] and [c.chosen for c in d.curves] == [40, 20, None]
    assert d.curves[0].distance.max() == pytest.approx(1.0)  # divided by the largest distance
    assert d.phase_starts() == (0, 20, 40)
    assert d.phase_of([0, 1, 20, 21, 40, 60]).tolist() == [0, 0, 0, 1, 1, 2]
    assert json.loads(json.dumps(d.to_json()))["subgoals"] == [20, 40, 60]


def test_latest_maximum_wins():
    """Two maxima before the goal: the later one is the next goal."""
    x, _ = zigzag([0.5, 0.0, 0.5, 0.0, 0.5, 1.0], 20)  # |x - 1| peaks at frames 20 and 60
    d = decompose_features(features_of(x), UVDConfig(min_gap=5))
    assert d.curves[0].maxima.tolist() == [20, 60] and d.curves[0].chosen == 60
    assert d.subgoals == (20, 40, 60, 100)


@pytest.mark.parametrize("min_gap, expected", [(19, (20, 40)), (20, (40,)), (9, (10, 20, 40))])
def test_min_gap(min_gap, expected):
    """A maximum exactly ``min_gap`` before the goal, or ``min_gap`` after the start, is refused: it
    must lie strictly more than ``min_gap`` frames away."""
    x = np.concatenate([np.linspace(0.5, 0.0, 11), np.linspace(0.0, 0.8, 11)[1:], np.linspace(0.8, 0.2, 21)[1:]])
    # 0.5 -> 0.0 (frame 10) -> 0.8 (frame 20) -> 0.2 (frame 40, the goal): |x - 0.2| peaks at 10 and 20;
    # a narrow kernel (gamma 2) keeps the peaks of these unequal slopes at the turns
    d = decompose_features(features_of(x), UVDConfig(min_gap=min_gap, gamma=2.0))
    assert d.subgoals == expected


def test_short_video_is_one_phase():
    d = decompose_features(torch.randn(10, 4), UVDConfig(min_gap=18))
    assert d.subgoals == (9,) and d.curves == () and d.num_phases == 1
    assert decompose_features(torch.randn(1, 4)).subgoals == (0,)


# ---------------------------------------------------------------------------------------- a toy video
def square_video(x: np.ndarray, width: int = SIZE) -> torch.Tensor:
    """uint8 ``(L, 3, 32, width)``: a white 6-px square at horizontal position ``x`` in [0, 1]."""
    frames = np.full((len(x), 3, SIZE, width), 30, np.uint8)
    for t, xt in enumerate(x):
        c = int(round(3 + xt * (width - 9)))
        frames[t, :, 13:19, c:c + 6] = 255
    return torch.from_numpy(frames)


class CentroidEncoder:
    """A frozen embedding through the method contract's ``encode``: where the bright pixels are."""

    image_size = SIZE

    def encode(self, frames: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        bright = (frames.float().mean(1) > 128).float()  # (L, S, S)
        cols = torch.arange(frames.shape[-1], dtype=torch.float32)
        return torch.stack([(bright.sum(1) * cols).sum(1) / bright.sum((1, 2)), bright.sum((1, 2)) * 0], 1)


def test_toy_video_with_known_phases():
    """Left, right, left again: UVD on the encoder's features finds the two turns and the end (wide
    frames: the square moves ~3 px a frame, so no two frames near a turn look the same)."""
    x, ends = zigzag([0.8, 0.2, 0.8, 0.2], 25)
    frames = square_video(x, width=128)
    d = decompose(CentroidEncoder(), frames, UVDConfig(min_gap=10))
    assert d.subgoals == tuple(ends)
    assert d.phase_of(range(len(x))).tolist() == [0] * 26 + [1] * 25 + [2] * 25


# ---------------------------------------------------------------------------------------- CLIs
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_reward_model(ProgressModel("convnet", image_size=SIZE), tmp_path_factory.mktemp("ckpt") / "m.pth")


def write_demo(root: Path, x: np.ndarray) -> Path:
    traj = root / "toy" / "test" / "0"
    traj.mkdir(parents=True)
    for t, frame in enumerate(square_video(x).numpy()):
        Image.fromarray(frame.transpose(1, 2, 0)).save(traj / f"{t}.png")
    return traj


def run(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "Video2Reward" / script), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_decompose_cli_writes_indices_strip_and_curve(tmp_path, checkpoint):
    write_demo(tmp_path / "demos", zigzag([0.5, 0.1, 0.9, 0.3], 12)[0])
    out = tmp_path / "out"
    result = run("decompose.py", "--checkpoint", checkpoint, "--data", tmp_path / "demos", "--out", out,
                 "--min_gap", 5, "--threads", 1)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "toy" / "test" / "0" / "subgoals.json").read_text())
    assert record["subgoals"][-1] == 36 and record["config"]["min_gap"] == 5 and record["num_frames"] == 37
    assert (out / "toy" / "test" / "0" / "subgoals.png").stat().st_size > 0
    assert (out / "toy" / "test" / "0" / "distance.png").stat().st_size > 0
    assert json.loads((out / "subgoals.json").read_text())["subgoals"] == {"toy/test/0": record["subgoals"]}
    bad = run("decompose.py", "--checkpoint", tmp_path / "missing.pth", "--data", tmp_path / "demos", "--out", out)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error:") and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_score_subgoals(tmp_path, checkpoint):
    traj = write_demo(tmp_path / "demos", zigzag([0.5, 0.1, 0.9, 0.3], 12)[0])
    result = run("score.py", traj, "--checkpoint", checkpoint, "--out", tmp_path / "s", "--subgoals", "--min_gap", 5)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "s" / "subgoals.json").read_text())["subgoals"][-1] == 36
    assert (tmp_path / "s" / "subgoals.png").is_file() and (tmp_path / "s" / "distance.png").is_file()
    assert (tmp_path / "s" / "progress.csv").is_file()
