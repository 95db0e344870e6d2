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


# ---------------------------------------------------------------------------------------- subgoal rewards
class LineModel:
    """A goal-conditioned reward on a line: a frame's feature is its position ``x`` (pixel (0, 0) of
    channel 0, ``x * 250``); the value is the fraction of the way from init to goal, ``1 - |x - g| / |i - g|``."""

    image_size = 4
    reward_kind = "value"
    method = "line"
    device = torch.device("cpu")

    def encode(self, frames: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        x = torch.as_tensor(frames)[:, 0, 0, 0].float() / 250
        return torch.stack([x, torch.zeros_like(x)], 1)

    def reward_from_features(self, f_init, f_cur, f_goal) -> torch.Tensor:
        f_init, f_cur, f_goal = torch.broadcast_tensors(f_init, f_cur, f_goal)
        return 1 - (f_cur - f_goal).norm(dim=-1) / (f_init - f_goal).norm(dim=-1).clamp_min(1e-9)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def line_frames(x) -> torch.Tensor:
    frames = torch.zeros(len(x), 3, 4, 4, dtype=torch.uint8)
    frames[:, 0, 0, 0] = torch.as_tensor(np.round(np.asarray(x) * 250), dtype=torch.uint8)
    return frames


def subgoal_reward(**config):
    from video2reward.reward_fn import FrameReward
    from video2reward.uvd import SubgoalConfig

    return FrameReward(LineModel(), subgoals=SubgoalConfig(UVDConfig(min_gap=3), **config))


def test_phase_offsets():
    from video2reward.uvd import phase_offsets

    # each phase starts where the previous one ended: offset_{k+1} = offset_k + max(0, end_k - start_{k+1})
    offsets = phase_offsets(torch.tensor([0.0, 0.5, -1.0]), torch.tensor([1.0, 0.2, 0.0]))
    torch.testing.assert_close(offsets, torch.tensor([0.0, 0.5, 1.7]))
    assert phase_offsets(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 3.0])).tolist() == [0.0, 0.0]  # never down
    assert phase_offsets(torch.tensor([0.3]), torch.tensor([1.0])).tolist() == [0.0]


def start_line_episode(reward) -> None:
    rollout, _ = zigzag([0.8, 0.2, 0.8, 0.2], 10)  # subgoals at frames 10, 20, 30: x = 0.2, 0.8, 0.2
    reward.start_episode(line_frames([0.8])[0], line_frames(rollout))


def test_subgoal_reward_advances_and_offsets():
    reward = subgoal_reward()
    assert reward.wants_goal_rollout
    start_line_episode(reward)
    plan = reward.subgoals.plan
    assert reward.subgoals.frames[:, 0, 0, 0].tolist() == [200, 50, 200, 50]  # init, then the three subgoals
    torch.testing.assert_close(plan.start_values, torch.zeros(3))  # each phase starts at value 0 ...
    torch.testing.assert_close(plan.end_values, torch.ones(3))  # ... and ends at 1: offsets 0, 1, 2
    torch.testing.assert_close(plan.offsets, torch.tensor([0.0, 1.0, 2.0]))
    rewards, phases = [], []
    for x in (0.5, 0.22, 0.5, 0.8, 0.2, 0.8):
        rewards.append(reward.step(line_frames([x])[0]).reward)
        phases.append(reward.subgoals.phase)
    # 0.5: halfway to 0.2 (phase 0); 0.22: 97 % of the way, reached (threshold 0.9), rewarded in phase 0;
    # 0.5: halfway from 0.2 to 0.8 (phase 1, offset 1); 0.8: reached; 0.2: the last subgoal (offset 2);
    # 0.8: back at the last phase's start: the last phase never advances
    np.testing.assert_allclose(rewards, [0.5, 1 - 0.02 / 0.6, 1.5, 2.0, 3.0, 2.0], atol=1e-3)
    assert phases == [0, 1, 1, 2, 2, 2]


def test_subgoal_reward_distance_rule():
    reward = subgoal_reward(advance="distance", threshold=0.9)  # within 10 % of the phase start's distance
    start_line_episode(reward)
    reward.step(line_frames([0.27])[0])  # 0.07 from 0.2, the start 0.6 away: 0.07 > 0.06
    assert reward.subgoals.phase == 0
    reward.step(line_frames([0.25])[0])  # 0.05 <= 0.06
    assert reward.subgoals.phase == 1


def test_subgoal_reward_relabels_each_frame_in_its_phase_and_resumes():
    from types import SimpleNamespace

    reward = subgoal_reward()
    start_line_episode(reward)
    xs = [0.5, 0.22, 0.5, 0.8, 0.2, 0.8]
    rewards = []
    for t, x in enumerate(xs):
        rewards.append(reward.step(line_frames([x])[0]).reward)
        reward.keep(7, t + 1)  # replay episode 7, step t + 1
    frames = line_frames(xs)
    batch = SimpleNamespace(init_frame=line_frames([0.8]).expand(2, -1, -1, -1),
                            goal_frame=line_frames([0.2]).expand(2, -1, -1, -1),
                            window_frames=torch.stack([frames[:3], frames[3:]]), episode=torch.tensor([7, 7]),
                            step=torch.tensor([0, 3]))
    expected = torch.tensor(rewards).view(2, 3)
    torch.testing.assert_close(reward.score_batch(batch), expected)
    reward.refresh()  # a model change: plans rebuilt from the kept subgoal frames, the phases kept
    torch.testing.assert_close(reward.score_batch(batch), expected)
    resumed = subgoal_reward()
    resumed.load_state_dict(torch.load(_saved(reward.state_dict()), weights_only=True))
    torch.testing.assert_close(resumed.score_batch(batch), expected)
    reward.forget(8)
    with pytest.raises(RuntimeError, match="no subgoals kept"):
        reward.score_batch(batch)


def _saved(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_subgoals_need_a_goal_conditioned_reward():
    from video2reward.methods import build_model
    from video2reward.reward_fn import FrameReward
    from video2reward.uvd import SubgoalConfig

    with pytest.raises(ValueError, match="does not read"):
        FrameReward(build_model("gail", {"backbone": "convnet", "image_size": SIZE}), subgoals=SubgoalConfig())
    with pytest.raises(ValueError, match="relabel=paper"):
        FrameReward(LineModel(), relabel="paper", subgoals=SubgoalConfig())
    with pytest.raises(ValueError, match="threshold"):
        SubgoalConfig(threshold=0.0)
