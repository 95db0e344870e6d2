"""Nothing lost, nothing mixed up (issue 14), the RL side: config validation, run-directory checks,
reward-checkpoint provenance, one-line errors from train_mw.py, incremental replay snapshots."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

import drm
from drm import reward_setup
from drm.config import ConfigError, check_config, check_resume
from drm.demos import DemoSettings, generate_demos
from drm.replay_buffer import ReplayBuffer
from video2reward.checkpoint import save_reward_model
from video2reward.methods.progressor import ProgressModel
from video2reward.precision import resolve_precision

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "DrM" / "train_mw.py"
S = 8


def compose_cfg(*overrides):
    with initialize_config_dir(config_dir=str(drm.DRM_ROOT / "cfgs"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def train_mw(run_dir, *overrides):
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
    env.pop("PROGRESSOR_DEBUG", None)
    return subprocess.run([sys.executable, str(SCRIPT), f"hydra.run.dir={run_dir}", *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------ config checks (case 4)
def test_default_and_toy_configs_pass_the_checks():
    check_config(compose_cfg())
    check_config(compose_cfg("task=toy-reach", "agent=drm_mw", "nstep=5", "discount=0.99", "num_threads=2"))


@pytest.mark.parametrize("override,key", [
    ("batch_size=abc", "batch_size='abc'"), ("batch_size=0", "batch_size=0"), ("nstep=0", "nstep=0"),
    ("discount=1.5", "discount=1.5"), ("reward_model=dense", "reward_model='dense'"),
    ("reward.relabel=all", "reward.relabel='all'"), ("agent.lr=-1", "agent.lr=-1"), ("device=gpu", "device='gpu'"),
    ("save_video=maybe", "save_video='maybe'"), ("pretrain.backbone=vit", "pretrain.backbone='vit'"),
])
def test_bad_values_are_named(override, key):
    with pytest.raises(ConfigError, match="invalid config") as err:
        check_config(compose_cfg(override))
    assert key in str(err.value)


def test_train_mw_rejects_a_bad_config_before_any_work(tmp_path):
    proc = train_mw(tmp_path / "run", "batch_size=abc", f"exp_data_path={tmp_path / 'demos'}")
    assert_one_line_error(proc, "batch_size='abc'", "want an integer >= 1")
    assert not (tmp_path / "demos").exists()  # no demos generated, nothing pretrained


# ------------------------------------------------------------------------------------ run directory (case 4)
def saved_config(*overrides):
    return OmegaConf.to_container(compose_cfg(*overrides), resolve=True)


def test_harmless_differences_continue_the_run():
    saved = saved_config("task=toy-reach", "seed=0")
    check_resume(saved, compose_cfg("task=toy-reach", "seed=0", "num_train_frames=99000", "eval_every_frames=7",
                                    "save_video=false", "num_threads=1", "device=cpu", "snapshot_every_frames=5"), "s")


def test_other_seed_reward_or_agent_stop_naming_the_keys():
    saved = saved_config("task=toy-reach", "seed=0")
    with pytest.raises(ConfigError) as err:
        check_resume(saved, compose_cfg("task=toy-reach", "seed=7", "reward_model=env"), "run/snapshot.pt")
    assert "run/snapshot.pt belongs to a run with other settings: reward_model ('ours' -> 'env'), seed (0 -> 7)" \
        in str(err.value)
    with pytest.raises(ConfigError, match="agent._target_"):
        check_resume(saved, compose_cfg("task=toy-reach", "seed=0", "agent=drm_mw"), "s")


def test_train_mw_refuses_to_continue_another_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    base = ["task=toy-reach", f"exp_data_path={tmp_path / 'demos'}"]
    torch.save({"config": saved_config(*base, "seed=0")}, run_dir / "snapshot.pt")
    proc = train_mw(run_dir, *base, "seed=7", "reward_model=env")
    assert_one_line_error(proc, "snapshot.pt belongs to a run with other settings", "seed (0 -> 7)", "reward_model")


def test_truncated_snapshot_is_one_line_without_unsafe_advice(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"config": {}, "padding": torch.zeros(1000)}, run_dir / "snapshot.pt")
    data = (run_dir / "snapshot.pt").read_bytes()
    (run_dir / "snapshot.pt").write_bytes(data[: len(data) // 2])
    proc = train_mw(run_dir, "task=toy-reach", "reward_model=env")
    assert_one_line_error(proc, "snapshot.pt: damaged or truncated snapshot")
    assert "weights_only" not in proc.stderr + proc.stdout  # never the advice to load it unsafely


# ------------------------------------------------------------------------------------ reward checkpoint (cases 2, 3)
def test_explicit_missing_reward_checkpoint_is_an_error(tmp_path):
    proc = train_mw(tmp_path / "run", "task=toy-reach", f"reward.checkpoint={tmp_path / 'typo.pth'}",
                    f"exp_data_path={tmp_path / 'demos'}")
    assert_one_line_error(proc, f"reward.checkpoint {tmp_path / 'typo.pth'} does not exist")
    assert not (tmp_path / "demos").exists()


def test_well_worded_workspace_errors_arrive_as_one_line(tmp_path):
    path = save_reward_model(ProgressModel("convnet", image_size=32), tmp_path / "r32.pth")
    proc = train_mw(tmp_path / "run", "task=toy-reach", "image_size=40", f"reward.checkpoint={path}")
    assert_one_line_error(proc, "reward model takes 32px frames but image_size=40")


def test_demo_script_refuses_bad_counts_and_unwritable_out(tmp_path):
    script = [sys.executable, str(ROOT / "scripts" / "generate_expert_demos.py"), "--tasks", "toy-reach"]
    proc = subprocess.run([*script, "--num_train", "-1", "--out", str(tmp_path / "d")], capture_output=True, text=True)
    assert proc.returncode == 2 and "--num_train must be >= 1, got -1" in proc.stderr
    blocker = tmp_path / "a_file"  # an --out that cannot be created (works as root too, unlike chmod)
    blocker.write_text("")
    proc = subprocess.run([*script, "--num_train", "1", "--num_test", "0", "--out", str(blocker / "d"), "--workers", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {blocker / 'd'}") and last.endswith(": Not a directory"), proc.stderr


@pytest.fixture
def fake_pretraining(monkeypatch):
    calls = []

    def pretrain(cfg, path, precision):
        calls.append(path)
        save_reward_model(ProgressModel("convnet", image_size=32), path,
                          provenance={"steps": cfg.pretrain.steps, "drm_request": reward_setup.pretrain_request(cfg)})
        return path
    monkeypatch.setattr(reward_setup, "pretrain_reward_model", pretrain)
    return calls


def toy_cfg(tmp_path, *overrides):
    cfg = compose_cfg("task=toy-reach", f"exp_data_path={tmp_path / 'demos'}", *overrides)
    with open_dict(cfg):
        cfg.reward.checkpoint = str(tmp_path / "default.pth")  # stands for the config files' default
    return cfg


def resolve(cfg, given=False):
    return reward_setup.resolve_reward_model(cfg, torch.device("cpu"), resolve_precision("fp32"), given)


def test_default_checkpoint_is_reused_only_when_it_matches(tmp_path, fake_pretraining, capsys):
    resolve(toy_cfg(tmp_path))  # missing default -> pretrained
    assert fake_pretraining == [tmp_path / "default.pth"]
    resolve(toy_cfg(tmp_path))  # same settings -> reused
    assert len(fake_pretraining) == 1
    capsys.readouterr()
    resolve(toy_cfg(tmp_path, "pretrain.steps=10", "demos.num_train=2"))  # a quick trial -> retrained, and said so
    out = capsys.readouterr().out
    assert len(fake_pretraining) == 2 and "was pretrained with other settings" in out
    default = toy_cfg(tmp_path)
    assert f"steps {default.pretrain.steps} -> 10" in out and f"demos_train {default.demos.num_train} -> 2" in out
    resolve(toy_cfg(tmp_path))  # and the next plain run does not silently take the trial's model
    assert len(fake_pretraining) == 3


def test_checkpoint_without_provenance_is_used_as_is(tmp_path, fake_pretraining, capsys):
    save_reward_model(ProgressModel("convnet", image_size=32), tmp_path / "default.pth")  # e.g. released weights
    resolve(toy_cfg(tmp_path))
    assert fake_pretraining == [] and "no provenance recorded" in capsys.readouterr().out


def test_given_checkpoint_must_exist_unless_pretraining_is_asked_for(tmp_path, fake_pretraining):
    with pytest.raises(reward_setup.RewardSetupError, match="does not exist"):
        resolve(toy_cfg(tmp_path), given=True)
    assert fake_pretraining == []
    resolve(toy_cfg(tmp_path, "reward.pretrain_if_missing=true"), given=True)
    assert fake_pretraining == [tmp_path / "default.pth"]


def test_killed_auto_pretraining_is_continued_only_with_the_same_settings(tmp_path):
    from dataclasses import asdict

    from video2reward.train import TrainConfig
    config = TrainConfig(data_path=str(tmp_path / "demos"), output_dir=str(tmp_path / "out"), tasks=["toy-reach"],
                         backbone="convnet", image_size=32, steps=800)
    last = tmp_path / "out" / "checkpoint_last.pth"
    assert not reward_setup._same_pretraining(last, config)
    saved = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
    save_reward_model(ProgressModel("convnet", image_size=32), last, step=300, train_config=saved)
    assert reward_setup._same_pretraining(last, config)
    config.steps = 10
    assert not reward_setup._same_pretraining(last, config)
    last.write_bytes(b"PK damaged")
    assert not reward_setup._same_pretraining(last, config)


def test_generated_demos_are_topped_up(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(reward_setup, "check_demo_settings", lambda *a, **k: None)
    monkeypatch.setattr(reward_setup, "generate_demos", lambda root, tasks, **kw: calls.append((tasks, kw["num_train"])))
    task = tmp_path / "demos" / "toy-reach"
    for i in range(2):
        (task / "train" / str(i)).mkdir(parents=True)
    (task / "test" / "0").mkdir(parents=True)
    reward_setup.ensure_demos(toy_cfg(tmp_path, "demos.num_test=1", "demos.num_train=5"), ["toy-reach"])
    assert calls == []  # no metadata.json: someone else's data, used as it is
    (task / "metadata.json").write_text("{}")
    cfg = toy_cfg(tmp_path, "demos.num_test=1", "demos.num_train=5")
    reward_setup.ensure_demos(cfg, ["toy-reach"])
    assert calls == [(["toy-reach"], 5)]  # 2 of 5: the missing 3 are generated


def test_other_demo_seed_matters_only_when_trajectories_are_added(tmp_path):
    made = DemoSettings.from_config(toy_cfg(tmp_path), seed=1)  # the run asks for demos.seed=0
    generate_demos(tmp_path / "demos", ["toy-reach"], num_train=2, num_test=1, settings=made, workers=1, progress=False)
    reward_setup.ensure_demos(toy_cfg(tmp_path, "demos.num_train=2", "demos.num_test=1"), ["toy-reach"])  # enough: used
    with pytest.raises(ValueError, match=r"toy-reach holds demos made with other settings .*'seed': \(1, 0\)") as err:
        reward_setup.ensure_demos(toy_cfg(tmp_path, "demos.num_train=3", "demos.num_test=1"), ["toy-reach"])
    assert "\n" not in str(err.value)  # one line (train_mw.py prints it as its error)
    assert len(list((tmp_path / "demos" / "toy-reach" / "train").iterdir())) == 2  # nothing added


# ------------------------------------------------------------------------------------ replay persistence (case 8)
def fill(buffer, episodes, length, rng, start=0):
    for e in range(start, start + episodes):
        buffer.add_first(rng.integers(0, 255, (3, S, S), dtype=np.uint8),
                         goal_frame=np.full((3, S, S), e % 255, np.uint8))
        for t in range(length):
            buffer.add(rng.uniform(-1, 1, 2), rng.integers(0, 255, (3, S, S), dtype=np.uint8), float(t), t == 3,
                       last=t == length - 1)


def same_samples(a, b):
    for _ in range(3):
        x, y = a.sample(16, 3, 0.9), b.sample(16, 3, 0.9)
        for field in ("obs", "action", "reward", "next_obs", "init_frame", "goal_frame", "window_frames", "step"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field), err_msg=field)


def test_snapshots_append_and_never_rewrite(tmp_path):
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(1000, (3, S, S), (2,), rng=1)
    fill(buffer, 4, 10, rng)
    state = buffer.save(tmp_path)
    (first,) = tmp_path.glob("*.pt")
    stamp, content = first.stat().st_mtime_ns, first.read_bytes()
    fill(buffer, 3, 10, rng, start=4)
    state = buffer.save(tmp_path)
    ReplayBuffer.prune(tmp_path, state)
    second = sorted(tmp_path.glob("*.pt"))[1]
    assert first.stat().st_mtime_ns == stamp and first.read_bytes() == content  # untouched
    assert torch.load(second, weights_only=True)["frames"].shape[0] == 3 * 11  # only the new slots
    assert torch.load(second, weights_only=True)["episode_ids"].tolist() == [4, 5, 6]
    restored = ReplayBuffer(1000, (3, S, S), (2,), rng=99)
    restored.load(tmp_path, state)
    assert len(restored) == len(buffer) and restored.num_episodes == buffer.num_episodes
    same_samples(buffer, restored)
    fill(buffer, 1, 10, rng, start=7)
    assert buffer.save(tmp_path)["segments"][-1][1:] == [77, 88]  # the next save starts where this one ended


def test_wrapped_buffer_restores_exactly_and_drops_dead_segments(tmp_path):
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(60, (3, S, S), (2,), rng=1)
    for k in range(6):  # 6 saves of 2 episodes (22 slots each): the ring wraps twice
        fill(buffer, 2, 10, rng, start=2 * k)
        state = buffer.save(tmp_path)
        ReplayBuffer.prune(tmp_path, state)
    names = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert names == sorted(seg[0] for seg in state["segments"]) and len(names) == 3  # 132 written, last 60 live
    (tmp_path / "000000999999-000001000000.pt").write_bytes(b"left by a killed save")
    restored = ReplayBuffer(60, (3, S, S), (2,), rng=5)
    restored.load(tmp_path, state)
    same_samples(buffer, restored)
    ReplayBuffer.prune(tmp_path, state)
    assert not (tmp_path / "000000999999-000001000000.pt").exists()
