"""Demo generation: layout, metadata, seeds, goal-frame consistency, resume after a kill."""
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from drm import demos  # noqa: E402
from drm.demos import DemoSettings, generate_demos, read_render_quality, trajectory_seed  # noqa: E402
from drm.envs import make_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOY = DemoSettings(seed=3, episode_length=20)


def _frames(traj_dir: Path) -> np.ndarray:
    n = len(list(traj_dir.glob("*.png")))
    return np.stack([np.asarray(Image.open(traj_dir / f"{i}.png")) for i in range(n)])


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*.png")}


def test_trajectory_seeds_are_deterministic_and_distinct():
    seeds = {trajectory_seed(0, t, s, i, a) for t in ("reach", "hammer") for s in ("train", "test")
             for i in range(10) for a in range(3)}
    assert len(seeds) == 2 * 2 * 10 * 3
    assert trajectory_seed(0, "reach", "train", 4) == trajectory_seed(0, "reach", "train", 4, 0)
    assert trajectory_seed(0, "reach", "train", 4) != trajectory_seed(1, "reach", "train", 4)


def test_layout_and_metadata(tmp_path):
    metas = generate_demos(tmp_path, ["toy-reach"], num_train=2, num_test=1, settings=TOY,
                           workers=1, progress=False)
    task_dir = tmp_path / "toy-reach"
    assert sorted(p.name for p in task_dir.iterdir()) == ["metadata.json", "test", "train"]
    assert sorted(p.name for p in (task_dir / "train").iterdir()) == ["0", "1"]
    frames = _frames(task_dir / "train" / "0")
    assert frames.shape == (21, 84, 84, 3) and frames.dtype == np.uint8
    meta = json.loads((task_dir / "metadata.json").read_text())
    assert meta == metas["toy-reach"]
    assert meta["policy"] == "expert" and meta["noise"] == 0.0 and meta["seed"] == 3
    assert meta["render_quality"] == "fast" and meta["image_size"] == 84
    assert meta["frames_per_trajectory"] == 21 and meta["num_trajectories"] == {"train": 2, "test": 1}
    record = meta["trajectories"]["train"]["0"]
    assert record["success"] is True and record["seed"] == trajectory_seed(3, "toy-reach", "train", 0)
    assert read_render_quality(tmp_path) == read_render_quality(task_dir) == "fast"
    assert read_render_quality(tmp_path / "elsewhere") is None


def test_goal_frame_equals_last_demo_frame_metaworld(tmp_path):
    settings = DemoSettings(seed=0, episode_length=30)
    meta = generate_demos(tmp_path, ["reach-v3"], num_train=1, num_test=0, settings=settings,
                          workers=1, progress=False)["reach"]
    record = meta["trajectories"]["train"]["0"]
    assert meta["camera"] == "corner4" and set(meta["versions"]) == {"metaworld", "mujoco"}
    frames = _frames(tmp_path / "reach" / "train" / "0")
    assert frames.shape == (31, 84, 84, 3)
    env = make_env("reach", seed=0, episode_length=30, render_quality=meta["render_quality"])
    _, info = env.reset(seed=record["seed"])
    goal, expert_success = env.goal_frame()
    env.close()
    np.testing.assert_array_equal(frames[0], info["frame"].transpose(1, 2, 0))
    np.testing.assert_array_equal(frames[-1], goal.transpose(1, 2, 0))
    assert expert_success is record["success"] is True


def test_goal_frame_equals_last_demo_frame_toy(tmp_path):
    meta = generate_demos(tmp_path, ["toy-reach"], num_train=1, num_test=1, settings=TOY,
                          workers=1, progress=False)["toy-reach"]
    env = make_env("toy-reach", episode_length=20)
    for split in ("train", "test"):
        env.reset(seed=meta["trajectories"][split]["0"]["seed"])
        last = _frames(tmp_path / "toy-reach" / split / "0")[-1]
        np.testing.assert_array_equal(last, env.goal_frame()[0].transpose(1, 2, 0))


def test_resumes_after_a_kill_without_duplicates_or_corruption(tmp_path):
    generate_demos(tmp_path, ["toy-reach"], num_train=3, num_test=0, settings=TOY, workers=1,
                   progress=False)
    train = tmp_path / "toy-reach" / "train"
    reference = {i: _frames(train / str(i)) for i in range(3)}
    # What a kill leaves: a half-written temporary folder, and a trajectory renamed into place
    # whose metadata record was never written.
    partial = train / ".tmp-3-deadbeef"
    partial.mkdir()
    Image.fromarray(reference[0][0]).save(partial / "0.png")
    meta_path = tmp_path / "toy-reach" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["trajectories"]["train"]["2"]
    meta_path.write_text(json.dumps(meta))
    (train / "2" / "20.png").unlink()  # and make it incomplete
    before = _snapshot(tmp_path)

    meta = generate_demos(tmp_path, ["toy-reach"], num_train=4, num_test=0, settings=TOY, workers=1,
                          progress=False)["toy-reach"]
    assert sorted(p.name for p in train.iterdir()) == ["0", "1", "2", "3"]
    assert sorted(meta["trajectories"]["train"]) == ["0", "1", "2", "3"]
    after = _snapshot(tmp_path)
    for i in (0, 1):  # finished trajectories are not touched
        assert all(after[k] == before[k] for k in before if k.startswith(f"toy-reach/train/{i}/"))
    for i in range(3):  # the redone one is complete and identical
        np.testing.assert_array_equal(_frames(train / str(i)), reference[i])

    again = generate_demos(tmp_path, ["toy-reach"], num_train=4, num_test=0, settings=TOY, workers=1,
                           progress=False)["toy-reach"]
    assert _snapshot(tmp_path) == after and again == meta  # nothing regenerated


def test_failed_write_leaves_no_trajectory(tmp_path, monkeypatch):
    saved = []

    def save_then_die(self, path, *args, **kwargs):
        if len(saved) == 5:
            raise KeyboardInterrupt
        saved.append(path)

    monkeypatch.setattr(Image.Image, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        demos.write_frames(np.zeros((10, 8, 8, 3), np.uint8), tmp_path / "0")
    assert list(tmp_path.iterdir()) == []


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    generate_demos(tmp_path, ["toy-reach"], num_train=1, num_test=0, settings=TOY, workers=1,
                   progress=False)
    noisy = DemoSettings(seed=3, episode_length=20, noise=0.5)
    with pytest.raises(ValueError, match="noise"):
        generate_demos(tmp_path, ["toy-reach"], num_train=1, num_test=0, settings=noisy, workers=1,
                       progress=False)


def test_rl_side_check_ignores_seed_and_size_but_not_episode_timing(tmp_path):
    generate_demos(tmp_path, ["toy-reach"], num_train=1, num_test=0, settings=TOY, workers=1,
                   progress=False)
    demos.check_demo_settings(tmp_path / "toy-reach", DemoSettings(seed=9, episode_length=20, image_size=48))
    with pytest.raises(ValueError, match="episode_length"):
        demos.check_demo_settings(tmp_path / "toy-reach", DemoSettings(seed=3, episode_length=30))
    meta = json.loads((tmp_path / "toy-reach" / "metadata.json").read_text())
    del meta["expert"]  # demos of the old full-speed toy expert carry no "expert" entry
    (tmp_path / "toy-reach" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="expert"):
        demos.check_demo_settings(tmp_path / "toy-reach", TOY)
    demos.check_demo_settings(tmp_path / "released-data", TOY)  # no metadata: nothing to check


def test_non_expert_policies_keep_failures_and_are_marked(tmp_path):
    for policy, noise in (("random", 0.0), ("expert", 0.5)):
        out = tmp_path / f"{policy}-{noise}"
        settings = DemoSettings(seed=0, episode_length=20, policy=policy, noise=noise)
        meta = generate_demos(out, ["toy-reach"], num_train=4, num_test=0, settings=settings,
                              workers=1, progress=False)["toy-reach"]
        assert meta["policy"] == policy and meta["noise"] == noise
        assert meta["num_trajectories"]["train"] == 4
        if policy == "random":  # a random walk rarely reaches the goal; kept anyway
            assert meta["num_success"]["train"] < 4
        assert all(r["failed_seeds"] == [] for r in meta["trajectories"]["train"].values())


def test_expert_that_never_succeeds_is_a_clear_error(tmp_path):
    short = DemoSettings(seed=0, episode_length=2)  # too short to reach the goal
    with pytest.raises(RuntimeError, match="failed on all 3 seeds"):
        generate_demos(tmp_path, ["toy-reach"], num_train=1, num_test=0, settings=short, workers=1,
                       max_attempts=3, progress=False)
    meta = json.loads((tmp_path / "toy-reach" / "metadata.json").read_text())
    assert meta["num_trajectories"]["train"] == 0


def test_cli_with_worker_processes(tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "generate_expert_demos.py"), "--tasks", "toy-reach",
           "--num_train", "3", "--num_test", "2", "--out", str(tmp_path), "--seed", "3",
           "--episode_length", "20", "--workers", "2"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    meta = json.loads((tmp_path / "toy-reach" / "metadata.json").read_text())
    assert meta["num_trajectories"] == {"train": 3, "test": 2}
    # the same frames as in-process generation with the same seed (at the toy task's own 32 px: not a flag)
    generate_demos(tmp_path / "inproc", ["toy-reach"], num_train=3, num_test=2, settings=replace(TOY, image_size=32),
                   workers=1, progress=False)
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            np.testing.assert_array_equal(_frames(tmp_path / "toy-reach" / split / str(i)),
                                          _frames(tmp_path / "inproc" / "toy-reach" / split / str(i)))


def test_cli_unknown_task_is_a_one_line_error(tmp_path):
    cmd = [sys.executable, str(ROOT / "scripts" / "generate_expert_demos.py"), "--tasks", "drawer",
           "--out", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown task 'drawer'; valid tasks: assembly," in result.stderr
    assert not (tmp_path / "drawer").exists()


def load_script():
    spec = importlib.util.spec_from_file_location("generate_expert_demos", ROOT / "scripts" / "generate_expert_demos.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_cli_task_groups_name_the_ml45_split(tmp_path):
    script = load_script()

    def tasks(*names: str) -> list[str]:
        return script.parse_args(["--tasks", *names, "--out", str(tmp_path)]).tasks

    train, test = tasks("ml45-train"), tasks("ml45-test")
    assert len(train) == 45 and len(set(train)) == 45 and "drawer-open" in train
    assert test == ["bin-picking", "box-close", "door-lock", "door-unlock", "hand-insert"]
    assert not set(train) & set(test) and sorted(train + test) == sorted(tasks("all"))
    assert tasks("ml45-test", "reach-v3") == test + ["reach"]  # groups mix with single names


def test_cli_defaults_are_each_tasks_rl_settings(tmp_path):
    script = load_script()

    def requests(*flags: str) -> dict[str, tuple]:
        args = script.parse_args(["--tasks", "toy-reach", "drawer-open", "--out", str(tmp_path), *flags])
        return {task: (r.settings.image_size, r.settings.episode_length, r.settings.action_repeat, r.num_train,
                       r.num_test, r.settings.seed) for r, tasks in script.requests(args).items() for task in tasks}

    # DrM/cfgs/task/toy-reach.yaml: 32 px, 30 steps, 40 + 10 demos; drawer-open: the defaults
    assert requests() == {"toy-reach": (32, 30, 2, 40, 10, 0), "drawer-open": (84, 100, 2, 30, 10, 0)}
    assert requests("--image_size", "48", "--num_train", "2", "--seed", "5") == {
        "toy-reach": (48, 30, 2, 2, 10, 5), "drawer-open": (48, 100, 2, 2, 10, 5)}  # a flag given: for every task
