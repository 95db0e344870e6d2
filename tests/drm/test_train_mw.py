"""`train_mw.py` end to end in a subprocess with tiny settings: demo generation, reward
pretraining, RL with relabelling and push-back, eval video, snapshots and exact resume."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from video2reward import load_reward_model
from video2reward.precision import resolve_precision

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "DrM" / "train_mw.py"


def train(tmp_path, run_name, *overrides, cwd=ROOT):
    run_dir = tmp_path / run_name
    cmd = [sys.executable, str(SCRIPT), f"hydra.run.dir={run_dir}", *overrides]
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir, proc.stdout + proc.stderr


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def toy_overrides(tmp_path, frames):
    return ["task=toy-reach", f"num_train_frames={frames}", "num_seed_frames=120", "eval_every_frames=120",
            "num_eval_episodes=2", "episode_length=15", "batch_size=16", "agent.hidden_dim=32",
            "agent.num_expl_steps=60", "log_every_frames=60", "snapshot_every_frames=60",
            "online_finetune_every_step=10", "finetune.expert_batch_size=4", "finetune.replay_batch_size=4",
            f"reward.checkpoint={tmp_path / 'reward' / 'toy.pth'}", f"exp_data_path={tmp_path / 'demos'}",
            "demos.num_train=3", "demos.num_test=1", "pretrain.steps=10", "pretrain.batch_size=8",
            "reward.pretrain_if_missing=true", "num_threads=1"]


@pytest.mark.slow
def test_toy_pipeline_pretrains_trains_and_resumes_exactly(tmp_path):
    # first run: no demos, no checkpoint -> both are made, then RL; stops at 240 frames
    half, out = train(tmp_path, "resumed", *toy_overrides(tmp_path, 240))
    assert "not found" in out and (tmp_path / "reward" / "toy.pth").exists()
    assert f"precision: {resolve_precision('auto').name} (auto: " in out  # chosen by the hardware, said once
    toy = load_reward_model(tmp_path / "reward" / "toy.pth").config  # the toy task's own pretrain settings
    assert (toy.backbone, toy.head) == ("convnet", "concat")
    assert (tmp_path / "demos" / "toy-reach" / "train").is_dir()
    for name in ("train.csv", "eval.csv", "snapshot.pt", "learning_curve.png"):
        assert (half / name).exists(), name
    assert list((half / "eval_video").glob("*.mp4")) and list((half / "reward_eval").glob("*.png"))
    assert any((half / "tb").iterdir())
    snap = torch.load(half / "snapshot.pt", weights_only=True)
    assert snap["counters"]["global_step"] * 2 == 240 and "reward_model" in snap and snap["reward"]["finetuner"]

    # the same run continued to 480 frames == a straight 480-frame run
    _, out = train(tmp_path, "resumed", *toy_overrides(tmp_path, 480))
    assert "resumed from" in out
    straight, _ = train(tmp_path, "straight", *toy_overrides(tmp_path, 480))
    a = torch.load(tmp_path / "resumed" / "snapshot.pt", weights_only=True)
    b = torch.load(straight / "snapshot.pt", weights_only=True)
    for net in ("actor", "critic", "encoder"):
        for k, v in a["agent"][net].items():
            assert torch.equal(v, b["agent"][net][k]), f"{net}.{k} differs after resume"
    for k, v in a["reward_model"]["state_dict"].items():
        assert torch.equal(v, b["reward_model"]["state_dict"][k]), f"reward model {k} differs after resume"
    ev_a, ev_b = rows(tmp_path / "resumed" / "eval.csv"), rows(straight / "eval.csv")
    assert [r["frame"] for r in ev_a] == [r["frame"] for r in ev_b]
    assert [r["episode_reward"] for r in ev_a] == [r["episode_reward"] for r in ev_b]


@pytest.mark.slow
def test_drawer_open_smoke_from_drm_dir(tmp_path):
    run_dir, out = train(tmp_path, "mw", "task=drawer-open", "agent=drm_mw", "num_train_frames=120",
                         "num_seed_frames=60", "eval_every_frames=1000", "num_eval_episodes=1",
                         "episode_length=15", "batch_size=8", "agent.hidden_dim=32", "agent.num_expl_steps=30",
                         "online_finetune_every_step=10", "finetune.expert_batch_size=2",
                         "finetune.replay_batch_size=2", f"reward.checkpoint={tmp_path / 'mw.pth'}",
                         "reward.pretrain_if_missing=true",
                         f"exp_data_path={tmp_path / 'demos'}", "pretrain.tasks=[drawer-open]",
                         "demos.num_train=1", "demos.num_test=1", "demos.keep_failures=true", "pretrain.steps=3", "pretrain.batch_size=4",
                         "num_threads=1", "save_video=false", "amp=false", cwd=ROOT / "DrM")
    assert "precision: fp32 (requested)" in out  # the legacy amp=false switch
    evals = rows(run_dir / "eval.csv")
    assert [int(float(r["frame"])) for r in evals] == [0, 120]
    train_rows = rows(run_dir / "train.csv")
    assert any("refine_expert_loss" in r and r["refine_expert_loss"] for r in train_rows)
    assert any("dormant_ratio" in k for k in train_rows[-1])
    # the pretrained reward model has the config's backbone and head (pretrain.backbone / .head)
    reward = load_reward_model(tmp_path / "mw.pth")
    assert (reward.config.backbone, reward.config.head) == ("convnet_spatial", "distance")


def state_overrides(tmp_path, task):
    """A state-policy Meta-World run in seconds: 15-step episodes, a 3-step reward model on one demo,
    push-back on the head."""
    return [f"task={task}", "obs_type=state", "num_seed_frames=60", "eval_every_frames=60",
            "num_eval_episodes=1", "episode_length=15", "batch_size=8", "agent.hidden_dim=32",
            "agent.num_expl_steps=30", "log_every_frames=30", "snapshot_every_frames=30",
            "finetune.expert_batch_size=2", "finetune.replay_batch_size=2",
            f"reward.checkpoint={tmp_path / 'mw.pth'}", "reward.pretrain_if_missing=true",
            f"exp_data_path={tmp_path / 'demos'}", f"pretrain.tasks=[{task}]", "demos.num_train=1",
            "demos.num_test=1", "demos.keep_failures=true", "pretrain.steps=3", "pretrain.batch_size=4",
            "num_threads=1", "save_video=false", "finetune.params=head"]


def test_state_policy_drawer_open_smoke_and_exact_resume(tmp_path):
    """obs_type=state: the agent sees Meta-World's 39-d state, the reward (with push-back on the head,
    as preset=state-cpu) still scores rendered frames; a run stopped at 60 frames and continued equals
    a straight run."""
    common = [*state_overrides(tmp_path, "drawer-open"), "online_finetune_every_step=10", "image_size=84"]
    half, _ = train(tmp_path, "resumed", *common, "num_train_frames=60")
    snap = torch.load(half / "snapshot.pt", weights_only=True)
    assert snap["agent"]["encoder"]["net.0.weight"].shape[1] == 39  # the state MLP, not the conv encoder
    assert snap["replay"]["config"]["state_shape"] == [39]
    assert snap["reward"]["finetuner"] is not None  # push-back runs on the frames
    resumed, out = train(tmp_path, "resumed", *common, "num_train_frames=120")
    assert "resumed from" in out
    straight, _ = train(tmp_path, "straight", *common, "num_train_frames=120")
    a, b = rows(resumed / "eval.csv"), rows(straight / "eval.csv")
    assert [int(float(r["frame"])) for r in a] == [0, 60, 120]
    for key in ("success_rate", "episode_reward", "episode_env_reward"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    assert any(r.get("refine_expert_loss") for r in rows(straight / "train.csv"))
    pretrained = load_reward_model(tmp_path / "mw.pth").state_dict()
    refined = torch.load(straight / "snapshot.pt", weights_only=True)["reward_model"]["state_dict"]
    assert all(torch.equal(v, pretrained[k]) for k, v in refined.items() if k.startswith("model."))  # encoder frozen
    assert not all(torch.equal(v, pretrained[k]) for k, v in refined.items() if k.startswith("fc_mu."))


@pytest.mark.slow
@pytest.mark.parametrize("reward_model", ["tcn", "vip", "hold_r", "hold_c", "rank2reward", "gail"])
def test_toy_smoke_with_every_baseline_reward(tmp_path, reward_model):
    """Every baseline through the same loop: pretrained on the toy demos where it learns offline,
    its discriminator updated online where it has one (rank2reward, gail)."""
    short_seed = {"num_seed_frames": "num_seed_frames=60", "agent.num_expl_steps": "agent.num_expl_steps=30"}
    overrides = [short_seed.get(o.split("=")[0], o) for o in toy_overrides(tmp_path, 120)]
    run_dir, out = train(tmp_path, reward_model, *overrides, f"reward_model={reward_model}", "save_video=false")
    assert [int(float(r["frame"])) for r in rows(run_dir / "eval.csv")] == [0, 120]
    online = any(r.get("disc_loss") for r in rows(run_dir / "train.csv"))
    assert online is (reward_model in ("rank2reward", "gail"))
    snap = torch.load(run_dir / "snapshot.pt", weights_only=True)
    assert snap["reward_model"]["config"]["method"] == reward_model
    if reward_model != "gail":  # pretrained into reward.checkpoint, and loads as its own method
        assert "not found: pretraining" in out
        assert load_reward_model(tmp_path / "reward" / "toy.pth").method == reward_model


@pytest.mark.parametrize("options", [("reward.form=delta", "reward.success_bonus=1.0"), ("reward.refresh_budget=4",),
                                     ("reward_model=env",)], ids=["delta+bonus", "refresh_budget", "env"])
def test_state_policy_plate_slide_with_the_new_options_resumes_exactly(tmp_path, options):
    """plate-slide, state policy, head-only push-back: each reward option (and the env reward, which
    renders no training frames) gives a run that stopped at 60 frames and continued equal to a straight one."""
    common = [*state_overrides(tmp_path, "plate-slide"), "online_finetune_every_step=5", *options]
    train(tmp_path, "resumed", *common, "num_train_frames=60")
    resumed, out = train(tmp_path, "resumed", *common, "num_train_frames=150")
    assert "resumed from" in out
    straight, _ = train(tmp_path, "straight", *common, "num_train_frames=150")
    a, b = rows(resumed / "eval.csv"), rows(straight / "eval.csv")
    assert [int(float(r["frame"])) for r in a] == [0, 60, 120, 150]
    for key in ("success_rate", "episode_reward", "episode_env_reward"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    train_a, train_b = rows(resumed / "train.csv"), rows(straight / "train.csv")
    assert [r["batch_reward"] for r in train_a if r.get("batch_reward")] == \
        [r["batch_reward"] for r in train_b if r.get("batch_reward")]
    if "reward_model=env" in options:
        assert all(r["goal_expert_success"] == "nan" for r in train_b)  # no goal rollout for a frame-free reward
    else:
        snap = torch.load(straight / "snapshot.pt", weights_only=True)
        refreshed = snap["reward"]["value_version"]  # model versions the stale-value table went through
        assert refreshed > 0 if "reward.refresh_budget=4" in options else refreshed == 0


@pytest.mark.slow
@pytest.mark.parametrize("reward_model", ["ours", "tcn"])
def test_toy_uvd_subgoals_train_and_resume_exactly(tmp_path, reward_model):
    """reward.subgoals=uvd: every episode's expert goal rollout decomposed into subgoals, phases advanced
    (a low threshold so that a random agent gets there), snapshots with the subgoal state, and a run
    stopped at 240 frames and continued equal to a straight one."""
    common = [*toy_overrides(tmp_path, 240), f"reward_model={reward_model}", "reward.subgoals=uvd",
              "reward.uvd.min_gap=2", "reward.uvd.threshold=0.2"]
    train(tmp_path, "resumed", *common)
    resumed, out = train(tmp_path, "resumed", *common, "num_train_frames=480")
    assert "resumed from" in out
    straight, _ = train(tmp_path, "straight", *common, "num_train_frames=480")
    a, b = (torch.load(d / "snapshot.pt", weights_only=True) for d in (resumed, straight))
    subgoals = b["reward"]["subgoals"]
    assert len(subgoals["episodes"]) == 480 // 30 and (subgoals["counts"] >= 2).all()  # init + >= 1 subgoal each
    assert subgoals["phases"].max() > 0, "no episode reached its first subgoal"
    for key in ("episodes", "counts", "frames", "phase_keys", "phases"):
        assert torch.equal(a["reward"]["subgoals"][key], subgoals[key]), key
    for net in ("actor", "critic"):
        for k, v in a["agent"][net].items():
            assert torch.equal(v, b["agent"][net][k]), f"{net}.{k} differs after resume"
    ev_a, ev_b = rows(resumed / "eval.csv"), rows(straight / "eval.csv")
    assert [r["episode_reward"] for r in ev_a] == [r["episode_reward"] for r in ev_b]
    assert [r["batch_reward"] for r in rows(resumed / "train.csv") if r.get("batch_reward")] == \
        [r["batch_reward"] for r in rows(straight / "train.csv") if r.get("batch_reward")]
