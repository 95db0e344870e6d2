"""Nothing lost, nothing mixed up (issue 14), the pretraining side: kill-safe checkpoints and
resume, provenance, one-line errors, a self-healing frame cache, umask-respecting outputs."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from video2reward import load_reward_model
from video2reward.checkpoint import CheckpointError, read_checkpoint, read_provenance, save_reward_model
from video2reward.data import DataError, load_dataset, load_image
from video2reward.errors import DEBUG_ENV, one_line_errors
from video2reward.io import atomic_torch_save, atomic_write_json, atomic_write_text, save_figure
from video2reward.methods.progressor import ProgressModel
from video2reward.train import TrainConfig, config_from_args, main, pretrain

REPO = Path(__file__).resolve().parents[2]
SIZE = 32


def write_demos(root: Path, tasks=("reach", "drawer-open"), n_train=3, n_test=2, length=8) -> Path:
    """<task>/{train,test}/<j>/<i>.png: a white bar whose width grows with i, on a per-video colour."""
    rng = np.random.default_rng(0)
    for task in tasks:
        for split, n in (("train", n_train), ("test", n_test)):
            for j in range(n):
                folder = root / task / split / str(j)
                folder.mkdir(parents=True)
                img = np.empty((SIZE, SIZE, 3), np.uint8)
                img[:] = rng.integers(0, 200, 3)
                for i in range(length):
                    img[SIZE // 3: 2 * SIZE // 3, : max(1, round(i / (length - 1) * SIZE))] = 255
                    Image.fromarray(img).save(folder / f"{i}.png")
    return root


def tiny(data_path, output_dir, **kw) -> TrainConfig:
    base = dict(data_path=str(data_path), output_dir=str(output_dir), backbone="convnet", image_size=SIZE,
                batch_size=8, steps=2, warmup_steps=1, frames_per_traj=4, trajs_per_batch=2, num_workers=0,
                progress_bar=False, log_every=1, precision="fp32")
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    return write_demos(tmp_path_factory.mktemp("demos") / "mw")


def steps_logged(path: Path) -> list[int]:
    with open(path, newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def cli(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "Video2Reward" / "main_ours.py"), "--data_path", str(data), "--output_dir",
            str(out), "--backbone", "convnet", "--image_size", str(SIZE), "--batch_size", "4", "--frames_per_traj", "3",
            "--trajs_per_batch", "2", "--num_workers", "0", "--no_progress_bar", "--log_every", "1", "--threads", "1",
            "--precision", "fp32", *extra]


def start_and_wait_for_checkpoint(cmd: list[str], out: Path, min_step: int = 3) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline:
        last = out / "checkpoint_last.pth"
        if last.exists() and (out / "train_log.csv").exists() and len(steps_logged(out / "train_log.csv")) > min_step:
            return proc
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no checkpoint written in time")


# ------------------------------------------------------------------------------------ case 1
def test_sigkill_loses_little_and_resume_cuts_the_logs_back(demos, tmp_path):
    """SIGKILL mid-run: the time-based checkpoint survives; --resume says where it starts and
    train_log.csv has no step twice."""
    out = tmp_path / "run"
    proc = start_and_wait_for_checkpoint(cli(demos, out, "--steps", "100000", "--save_minutes", "0.001",
                                             "--no_final_eval"), out)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    saved = int(torch.load(out / "checkpoint_last.pth", weights_only=True)["step"])
    assert saved >= 1 and max(steps_logged(out / "train_log.csv")) >= saved  # the log ran ahead of the checkpoint
    resumed = subprocess.run(cli(demos, out, "--steps", str(saved + 2), "--resume", "--no_final_eval"),
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {out / 'checkpoint_last.pth'}: step {saved} of {saved + 2}, saved 20" in resumed.stdout
    assert steps_logged(out / "train_log.csv") == list(range(1, saved + 3))


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_save_and_exit_without_traceback(demos, tmp_path, sig, code):
    out = tmp_path / "run"
    proc = start_and_wait_for_checkpoint(cli(demos, out, "--steps", "100000", "--save_minutes", "0.001",
                                             "--no_final_eval"), out)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert f"stopped by {signal.Signals(sig).name} at step" in stdout
    step = int(torch.load(out / "checkpoint_last.pth", weights_only=True)["step"])
    assert max(steps_logged(out / "train_log.csv")) == step  # saved after the last finished step


def test_resume_says_when_there_is_nothing_to_resume(demos, tmp_path, capsys):
    pretrain(tiny(demos, tmp_path / "new", steps=1, final_eval=False, resume="auto"))
    assert "nothing to resume" in capsys.readouterr().out
    pretrain(tiny(demos, tmp_path / "new", steps=1, final_eval=False))  # a plain rerun starts over, and says so
    assert "starting over at step 0 (continue it instead with --resume)" in capsys.readouterr().out
    assert steps_logged(tmp_path / "new" / "train_log.csv") == [1]


def test_periodic_checkpoints_keep_the_last_n(demos, tmp_path):
    out = tmp_path / "keep"
    pretrain(tiny(demos, out, steps=5, save_every=1, keep_last=2, final_eval=False))
    assert sorted(p.name for p in out.glob("checkpoint_*.pth")) == ["checkpoint_4.pth", "checkpoint_5.pth",
                                                                  "checkpoint_last.pth"]


def test_disk_full_while_saving_is_one_line(demos, tmp_path, monkeypatch):
    import video2reward.train as train

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 4096 vs 2040")
    monkeypatch.setattr(train, "save_reward_model", full)
    with pytest.raises(SystemExit) as info:
        main(["--data_path", str(demos), "--output_dir", str(tmp_path / "o"), "--steps", "1", "--backbone", "convnet",
              "--image_size", str(SIZE), "--batch_size", "4", "--num_workers", "0", "--no_progress_bar"])
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert "checkpoint_last.pth: could not write the checkpoint" in message and "MiB free" in message


@pytest.mark.parametrize("flags,expect", [
    (["--batch_size", "0"], "batch_size must be an integer >= 1"),
    (["--steps", "-5"], "steps must be an integer >= 1"),
    (["--lr", "-1"], "lr must be > 0"),
    (["--backbone", "resnet9000"], "backbone must be one of"),
    (["--keep_last", "0"], "keep_last must be an integer >= 1"),
    (["--save_minutes", "-1"], "save_minutes must be >= 0"),
])
def test_bad_flags_are_refused_before_any_work(flags, expect, capsys):
    with pytest.raises(SystemExit) as info:
        config_from_args(["--data_path", "x", *flags])
    assert info.value.code == 2 and expect in capsys.readouterr().err


# ------------------------------------------------------------------------------------ case 2
def test_checkpoint_records_its_provenance(demos, tmp_path):
    path = pretrain(tiny(demos, tmp_path / "p", steps=2))
    origin = read_provenance(path)
    assert origin["data_path"] == str(demos.resolve()) and origin["tasks"] == ["drawer-open", "reach"]
    assert origin["trajectories"] == {"drawer-open": {"train": 3, "test": 2}, "reach": {"train": 3, "test": 2}}
    assert origin["image_size"] == SIZE and origin["steps"] == 2 and origin["heldout_split"] == "test"
    assert -1 <= origin["heldout_voc"] <= 1 and origin["saved_at"].startswith("20")
    assert load_reward_model(path).image_size == SIZE  # still an ordinary checkpoint


# ------------------------------------------------------------------------------------ case 4 / 7
def test_debug_env_var_shows_the_traceback(monkeypatch):
    with pytest.raises(SystemExit) as info, one_line_errors():
        raise KeyError("boom")
    assert str(info.value.code) == f"error: KeyError: 'boom' (traceback: {DEBUG_ENV}=1)"
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(KeyError), one_line_errors():
        raise KeyError("boom")


def test_truncated_and_foreign_checkpoints_never_advise_unsafe_loading(tmp_path):
    good = save_reward_model(ProgressModel("convnet", image_size=SIZE), tmp_path / "m.pth")
    truncated = tmp_path / "snapshot.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(truncated, what="snapshot")
    assert "snapshot.pt: damaged or truncated snapshot" in str(err.value) and "weights_only" not in str(err.value)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(100))
    with pytest.raises(CheckpointError) as err:
        load_reward_model(clip)
    assert "clip.mp4: not a reward checkpoint (an MP4/MOV video)" in str(err.value)
    assert "pickled" not in str(err.value)


def test_decompression_bomb_png_is_a_data_error(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64 x 64 > 2 x 100: Pillow's bomb error
    with pytest.raises(DataError, match="big.png: image too large to decode safely"):
        load_image(path, SIZE)


# ------------------------------------------------------------------------------------ case 5
@pytest.mark.parametrize("damage", ["truncated_u8", "corrupt_json"])
def test_damaged_frame_cache_is_rebuilt(tmp_path, damage, capsys):
    root = write_demos(tmp_path / "d", tasks=("reach",), n_train=2, n_test=1, length=5)
    first = np.array(load_dataset(root, "train", SIZE).frames)
    cache = root / ".v2r_cache"
    if damage == "truncated_u8":
        u8 = next(cache.glob("*.u8"))
        u8.write_bytes(u8.read_bytes()[:100])
    else:
        next(cache.glob("*.json")).write_text("{not json")
    again = load_dataset(root, "train", SIZE)
    assert "rebuilding it" in capsys.readouterr().out
    np.testing.assert_array_equal(np.array(again.frames), first)
    load_dataset(root, "train", SIZE)
    assert "using cached frames" in capsys.readouterr().out  # and the rebuilt cache is used next time


# ------------------------------------------------------------------------------------ case 8 (files)
@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_outputs_respect_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "b.json", {})
        atomic_torch_save({"x": torch.zeros(1)}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.json", "c.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_save_figure_writes_atomically_and_closes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    assert save_figure(fig, tmp_path / "a.png", dpi=50) == tmp_path / "a.png"
    assert not plt.fignum_exists(fig.number)
    save_figure(Figure(), tmp_path / "b.png")  # made without pyplot
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temporary file left


# ------------------------------------------------------------------------------------ score.py (case 7)
@pytest.fixture
def model_file(tmp_path):
    return save_reward_model(ProgressModel("convnet", image_size=SIZE), tmp_path / "m.pth")


def test_score_refuses_bad_out_and_batch_size(tmp_path, model_file, capsys):
    from video2reward.scoring import main as score_main
    taken = tmp_path / "taken.csv"
    taken.write_text("mine")
    with pytest.raises(SystemExit) as info:
        score_main([str(tmp_path), "--checkpoint", str(model_file), "--out", str(taken)])
    assert info.value.code == 2 and "is an existing file" in capsys.readouterr().err and taken.read_text() == "mine"
    with pytest.raises(SystemExit) as info:
        score_main([str(tmp_path), "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--batch_size", "0"])
    assert info.value.code == 2 and "--batch_size must be >= 1" in capsys.readouterr().err


def test_score_single_frame_has_no_voc(tmp_path, model_file, capsys):
    from video2reward.scoring import main as score_main
    folder = tmp_path / "one"
    folder.mkdir()
    Image.new("RGB", (SIZE, SIZE), (10, 20, 30)).save(folder / "0.png")
    assert score_main([str(folder), "--checkpoint", str(model_file), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "VOC undefined (a single frame has no order)" in out and "VOC 0.000" not in out
