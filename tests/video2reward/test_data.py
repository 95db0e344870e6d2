"""Data discovery, decoding and the frame cache (video2reward.data)."""
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from video2reward import data as data_mod
from video2reward.data import DataError, VideoDataset, discover_trajectories, load_dataset, natural_key

SIZE = 16


def frame(t: int, size: int = SIZE, channels: int = 3) -> np.ndarray:
    """A frame whose every pixel encodes its index ``t`` (exact through lossless PNG)."""
    return np.full((size, size, channels), t % 256, dtype=np.uint8)


def write_traj(folder: Path, n: int, ext: str = ".png", name=lambda i: str(i), size: int = SIZE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(frame(i, size)).save(folder / f"{name(i)}{ext}")


def write_video(path: Path, n: int, size: int = 32) -> None:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.stack([np.full((size, size, 3), 20 * i, dtype=np.uint8) for i in range(n)])
    iio.imwrite(path, frames, fps=10, plugin="FFMPEG", macro_block_size=1)


@pytest.fixture
def mw_root(tmp_path):
    """Meta-World layout: two tasks, 2 train + 1 test trajectories, 12 frames named 0..11."""
    root = tmp_path / "mw"
    for task in ("reach", "drawer-open"):
        for split, n in (("train", 2), ("test", 1)):
            for j in range(n):
                write_traj(root / task / split / str(j), 12)
    (root / "reach" / "metadata.json").write_text("{}")
    return root


def test_natural_sort_orders_numbers():
    names = ["10.png", "2.png", "1.png", "0.png", "frame_011.jpg", "frame_002.jpg"]
    assert sorted(names, key=natural_key)[:4] == ["0.png", "1.png", "2.png", "10.png"]


def test_metaworld_layout_numeric_frame_order(mw_root, tmp_path):
    ds = load_dataset(mw_root, "train", SIZE, cache_dir=tmp_path / "cache")
    assert len(ds) == 4 and ds.task_names == ["drawer-open", "reach"]
    assert ds.tasks == ["drawer-open", "drawer-open", "reach", "reach"]
    assert list(ds.lengths) == [12] * 4
    traj = ds.trajectory(2)
    assert traj.dtype == torch.uint8 and traj.shape == (12, 3, SIZE, SIZE)
    # frame i holds value i: numeric order, not "0, 1, 10, 11, 2, ..."
    assert traj[:, 0, 0, 0].tolist() == list(range(12))
    test = load_dataset(mw_root, "test", SIZE, cache_dir=tmp_path / "cache")
    assert len(test) == 2 and test.names == ["drawer-open/test/0", "reach/test/0"]
    assert load_dataset(mw_root, "train", SIZE, tasks=["reach"], cache_dir=tmp_path / "cache").task_names == ["reach"]


def test_gather_and_select(mw_root, tmp_path):
    ds = load_dataset(mw_root, "train", SIZE, cache_dir=tmp_path / "c")
    out = ds.gather(np.array([[3], [0]]), np.array([[5, 1, 7], [0, 11, 2]]))
    assert out.shape == (2, 3, 3, SIZE, SIZE)
    assert out[:, :, 1, 0, 0].tolist() == [[5, 1, 7], [0, 11, 2]]
    reach = ds.select("reach")
    assert len(reach) == 2 and reach.task_names == ["reach"] and reach.frames is ds.frames
    with pytest.raises(DataError, match="unknown task"):
        ds.select("hammer")


def test_single_task_root(tmp_path):
    root = tmp_path / "drawer-open"
    write_traj(root / "train" / "0", 5)
    write_traj(root / "test" / "0", 4)
    ds = load_dataset(root, "test", SIZE)
    assert ds.task_names == ["drawer-open"] and list(ds.lengths) == [4]
    assert (root / ".v2r_cache").is_dir()  # default cache beside the data


def test_epic_layout_split_by_sorted_folder(tmp_path):
    root = tmp_path / "epic"
    for v in range(10):
        write_traj(root / f"P01_{v:02d}", 3 + v, ext=".jpg", name=lambda i: f"frame_{i + 1:010d}")
    train = load_dataset(root, "train", SIZE, cache_dir=tmp_path / "c")
    test = load_dataset(root, "test", SIZE, cache_dir=tmp_path / "c")
    assert len(train) == 9 and len(test) == 1
    assert test.names == ["epic/test/P01_09"] and list(test.lengths) == [12]
    assert list(train.lengths) == list(range(3, 12))


def test_video_files_root_and_task_folders(tmp_path):
    root = tmp_path / "videos"
    for k in range(3):
        write_video(root / f"clip{k}.mp4", 6 + k)
    train = load_dataset(root, "train", 24, cache_dir=tmp_path / "c")
    assert len(train) == 2 and list(train.lengths) == [6, 7] and train.image_size == 24
    levels = train.trajectory(0)[:, :, 12, 12].float().mean(1)
    assert torch.all(levels[1:] > levels[:-1])  # frames in order (lossy codec: compare monotonicity)
    tasks = tmp_path / "bytask"
    write_video(tasks / "pour" / "a.webm", 5)
    write_video(tasks / "pour" / "b.avi", 5)
    write_video(tasks / "stir" / "a.mov", 5)
    write_video(tasks / "stir" / "b.mp4", 5)
    ds = load_dataset(tasks, "test", 32, cache_dir=tmp_path / "c")
    assert ds.task_names == ["pour", "stir"] and list(ds.lengths) == [5, 5]


def test_cache_reused_then_invalidated(mw_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_dataset(mw_root, "train", SIZE, cache_dir=cache)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and isinstance(first.frames, np.memmap)

    def no_decode(*a, **k):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(data_mod, "load_image", no_decode)
    again = load_dataset(mw_root, "train", SIZE, cache_dir=cache)
    assert np.array_equal(np.asarray(again.frames), np.asarray(first.frames))
    monkeypatch.undo()
    # change one frame's content (size and mtime change): the cache is rebuilt and replaces the old one
    target = mw_root / "reach" / "train" / "1" / "3.png"
    Image.fromarray(frame(200)).save(target)
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    rebuilt = load_dataset(mw_root, "train", SIZE, cache_dir=cache)
    assert rebuilt.trajectory(3)[3, 0, 0, 0] == 200
    assert sorted(p.name for p in cache.iterdir()) != files and len(list(cache.iterdir())) == 2
    # a different image size is a different cache entry
    small = load_dataset(mw_root, "train", 8, cache_dir=cache)
    assert small.image_size == 8 and len(list(cache.iterdir())) == 4


def test_color_modes_and_sizes_are_converted(tmp_path):
    root = tmp_path / "modes" / "train"
    traj = root / "0"
    traj.mkdir(parents=True)
    Image.fromarray(np.full((SIZE, SIZE, 4), 50, np.uint8), "RGBA").save(traj / "0.png")  # alpha dropped
    Image.fromarray(np.full((SIZE, SIZE), 90, np.uint8), "L").save(traj / "1.png")  # gray -> RGB
    Image.fromarray(np.full((40, 40, 3), 130, np.uint8)).save(traj / "2.png")  # larger: resized
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = 255  # centre third white: the centre crop keeps only it
    Image.fromarray(wide).save(traj / "3.png")
    Image.fromarray(np.full((SIZE, SIZE), 3, np.uint8), "P").save(traj / "4.png")
    ds = load_dataset(tmp_path / "modes", "train", SIZE)
    f = ds.trajectory(0)
    assert f.shape == (5, 3, SIZE, SIZE)
    assert f[0].unique().tolist() == [50] and f[1].unique().tolist() == [90] and f[2].unique().tolist() == [130]
    assert f[3].float().mean() > 240


@pytest.mark.parametrize("case", ["missing", "empty", "file", "short", "corrupt", "truncated", "bad_video",
                                  "unknown_task", "no_split", "frames_at_root"])
def test_bad_inputs_raise_one_line_errors(tmp_path, case):
    root = tmp_path / "d"
    expect = "not found"
    if case == "empty":
        root.mkdir()
        expect = "empty"
    elif case == "file":
        root.write_text("x")
        expect = "not a folder"
    elif case == "short":
        write_traj(root / "t" / "train" / "0", 1)
        expect = "1 image frame"
    elif case == "corrupt":
        write_traj(root / "t" / "train" / "0", 3)
        (root / "t" / "train" / "0" / "1.png").write_bytes(b"not a png")
        expect = "1.png: unreadable image"
    elif case == "truncated":
        write_traj(root / "t" / "train" / "0", 3, size=64)
        p = root / "t" / "train" / "0" / "2.png"
        p.write_bytes(p.read_bytes()[:60])
        expect = "2.png: unreadable image"
    elif case == "bad_video":
        root.mkdir()
        (root / "a.mp4").write_bytes(b"garbage")
        (root / "b.mp4").write_bytes(b"garbage")
        expect = "a.mp4: unreadable video"
    elif case == "unknown_task":
        write_traj(root / "reach" / "train" / "0", 3)
        expect = "unknown task"
    elif case == "no_split":
        write_traj(root / "reach" / "train" / "0", 3)
        expect = "no 'test' folder"
    elif case == "frames_at_root":
        write_traj(root, 3)
        expect = "holds image frames directly"
    split = "test" if case == "no_split" else "train"
    tasks = ["hammer"] if case == "unknown_task" else None
    with pytest.raises(DataError, match=expect) as info:
        load_dataset(root, split, SIZE, tasks=tasks, cache_dir=tmp_path / "c")
    assert "\n" not in str(info.value)
    assert not any(p.suffix == ".tmp" for p in (tmp_path / "c").glob("*")) if (tmp_path / "c").exists() else True


def test_short_video_is_an_error(tmp_path):
    write_video(tmp_path / "v" / "a.mp4", 1)
    write_video(tmp_path / "v" / "b.mp4", 1)
    with pytest.raises(DataError, match="a.mp4: video has 1 decodable frame"):
        load_dataset(tmp_path / "v", "train", 32, cache_dir=tmp_path / "c")


def test_from_trajectories_and_discovery_order(tmp_path):
    trajs = [torch.full((n, 3, 8, 8), n, dtype=torch.uint8) for n in (3, 5)]
    ds = VideoDataset.from_trajectories(trajs, ["a", "b"])
    assert ds.num_frames == 8 and ds.trajectory(1)[0, 0, 0, 0] == 5 and ds.image_size == 8
    with pytest.raises(DataError, match="fewer than 2 frames"):
        VideoDataset.from_trajectories([torch.zeros(1, 3, 8, 8, dtype=torch.uint8)], "a")
    for j in (10, 2, 1):
        write_traj(tmp_path / "r" / "train" / str(j), 2)
    names = [s.name for s in discover_trajectories(tmp_path / "r", "train")]
    assert names == ["r/train/1", "r/train/2", "r/train/10"]
