"""The reward-model evaluation suite: rollout sets (goal images, placements, resume) and the command."""
import json
import os
import subprocess
import sys
import types
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drm.demos import DemoSettings, generate_demos, read_metadata
from drm.envs import make_env
from drm.lab.eval_data import GROUPS, generate_eval_sets, goal_frame_file, load_records
from drm.lab.eval_suite import confusion_matrix
from video2reward import ProgressModel, save_reward_model
from video2reward.io import atomic_torch_save
from video2reward.methods import build_model
from video2reward.reward_fn import TrajectoryScores

ROOT = Path(__file__).resolve().parents[2]
TOY = DemoSettings(seed=3, image_size=16, episode_length=8)


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _check_goals_and_placements(root: Path, task: str, num: int, settings: DemoSettings) -> None:
    env = make_env(task, seed=0, image_size=settings.image_size, episode_length=settings.episode_length)
    for i in range(num):
        expert = load_records(root, "expert", task, num)[i]
        env.reset(seed=expert.seed)
        goal, _ = env.goal_frame()  # the env's goal image for this placement
        assert np.array_equal(_png(goal_frame_file(root, task, i)), goal.transpose(1, 2, 0))
        assert goal_frame_file(root, task, i).name == f"{settings.episode_length}.png"
        for group in GROUPS:  # every group starts from the same placement
            assert load_records(root, group, task, num)[i].seed == expert.seed
            assert np.array_equal(_png(root / group / task / "test" / str(i) / "0.png"),
                                  _png(root / "expert" / task / "test" / str(i) / "0.png"))
    env.close()


def test_goal_frames_are_the_expert_final_frames_toy(tmp_path):
    generate_eval_sets(tmp_path, ["toy-reach"], [], 3, TOY, workers=1, progress=False)
    _check_goals_and_placements(tmp_path, "toy-reach", 3, TOY)
    rec = load_records(tmp_path, "noise-1.0", "toy-reach", 3)[0]
    assert rec.step_reward.shape == rec.step_success.shape == (TOY.episode_length,)
    assert rec.success == bool(rec.step_success.any())


@pytest.mark.slow
def test_goal_frames_are_the_expert_final_frames_metaworld(tmp_path):
    settings = DemoSettings(seed=1, image_size=32, episode_length=4)
    generate_eval_sets(tmp_path, ["reach"], [], 2, settings, workers=1, progress=False)
    _check_goals_and_placements(tmp_path, "reach", 2, settings)


def test_parked_rollouts_hold_one_action_and_negatives_use_the_train_seeds(tmp_path):
    from drm.demos import rollout, trajectory_seed

    class Recorder:  # the toy env, its actions recorded
        def __init__(self, env):
            self.env, self.actions = env, []

        def __getattr__(self, name):
            return getattr(self.env, name)

        def step(self, action):
            self.actions.append(np.array(action))
            return self.env.step(action)

    env = Recorder(make_env("toy-reach", seed=0, image_size=TOY.image_size, episode_length=TOY.episode_length))
    rollout(env, seed=5, policy="parked")
    assert len(env.actions) == TOY.episode_length and all(np.array_equal(a, env.actions[0]) for a in env.actions)
    rollout(env, seed=6, policy="parked")  # another episode, another action
    assert not np.array_equal(env.actions[-1], env.actions[0])
    env.close()

    # pretraining negatives: the groups from the demos' train seeds, never the evaluation's
    generate_eval_sets(tmp_path / "neg", ["toy-reach"], [], 2, TOY, workers=1, progress=False,
                       groups=("parked", "noise-0.3"), split="train")
    generate_demos(tmp_path / "demos", ["toy-reach"], num_train=2, num_test=0, settings=TOY, workers=1, progress=False)
    for group in ("parked", "noise-0.3"):
        meta = read_metadata(tmp_path / "neg" / group / "toy-reach")
        assert sorted(meta["trajectories"]["train"]) == ["0", "1"] and not meta["trajectories"]["test"]
        assert meta["policy"] == GROUPS[group].get("policy", "expert")  # the metadata says the kind
        for i in range(2):
            assert meta["trajectories"]["train"][str(i)]["seed"] == trajectory_seed(TOY.seed, "toy-reach", "train", i)
    demo = read_metadata(tmp_path / "demos" / "toy-reach")["trajectories"]["train"]["0"]
    if demo["seed"] == trajectory_seed(TOY.seed, "toy-reach", "train", 0):  # the expert's first attempt
        assert np.array_equal(_png(tmp_path / "neg" / "parked" / "toy-reach" / "train" / "0" / "0.png"),
                              _png(tmp_path / "demos" / "toy-reach" / "train" / "0" / "0.png"))  # same placement
    with pytest.raises(ValueError, match="unknown rollout group"):
        generate_eval_sets(tmp_path / "neg", ["toy-reach"], [], 2, TOY, groups=("lazy",), progress=False)


def test_generation_resumes_and_refuses_other_settings(tmp_path):
    generate_eval_sets(tmp_path, ["toy-reach"], [], 2, TOY, workers=1, progress=False)
    first = tmp_path / "random" / "toy-reach" / "test" / "0" / "3.png"
    stamp = first.stat().st_mtime_ns
    split_dir = tmp_path / "random" / "toy-reach" / "test"
    leftovers = [split_dir / ".tmp-5-abc", split_dir / "7"]
    for d in leftovers:  # what a killed run leaves: a temporary folder, a folder never journalled
        d.mkdir()
    generate_eval_sets(tmp_path, ["toy-reach"], [], 3, TOY, workers=1, progress=False)
    assert first.stat().st_mtime_ns == stamp  # finished rollouts are kept
    assert not any(d.exists() for d in leftovers)
    for group in GROUPS:
        meta = read_metadata(tmp_path / group / "toy-reach")
        assert sorted(meta["trajectories"]["test"]) == ["0", "1", "2"]
        assert (tmp_path / group / "toy-reach" / "test" / "2" / "8.png").is_file()
    with pytest.raises(ValueError, match="other settings") as err:
        generate_eval_sets(tmp_path, ["toy-reach"], [], 3, DemoSettings(seed=3, image_size=16, episode_length=9),
                           workers=1, progress=False)
    assert "\n" not in str(err.value)


def test_confusion_layout():
    # features: column 0 = the task's id, so mu = 10 * task of the trajectory + task of the goal
    experts = {t: [torch.full((3, 2), float(t)) for _ in range(2)] for t in range(3)}
    scorer = types.SimpleNamespace(score_features=lambda init, cur, goal: TrajectoryScores(
        (10 * cur[:, 0] + goal[:, 0]).numpy(), None))
    conf = confusion_matrix(scorer, experts)
    assert conf.tolist() == [[10 * i + j for j in range(3)] for i in range(3)]  # rows: rollouts, cols: goals


def _fake_run(run: Path, start: Path, image_size: int) -> None:
    """An RL run directory as drm.workspace leaves it: snapshot.pt with the refined model and the config."""
    torch.manual_seed(5)
    refined = ProgressModel("convnet", image_size=image_size)
    cfg = {"reward_model": "ours", "reward": {"checkpoint": str(start), "alpha": 0.4}, "image_size": image_size,
           "render_quality": "fast", "episode_length": TOY.episode_length, "action_repeat": 2, "task_name": "toy-reach"}
    run.mkdir()
    atomic_torch_save({"config": cfg, "reward_model": {"config": asdict(refined.config),
                                                       "state_dict": refined.state_dict()}}, run / "snapshot.pt")


def test_cli_writes_metrics_report_and_plots(tmp_path):
    torch.manual_seed(0)
    save_reward_model(ProgressModel("convnet", image_size=16), tmp_path / "a.pth")
    save_reward_model(ProgressModel("convnet", image_size=12, head="distance"), tmp_path / "start.pth")
    save_reward_model(build_model("vip", {"backbone": "convnet", "image_size": 16}), tmp_path / "vip.pth")
    _fake_run(tmp_path / "run", tmp_path / "start.pth", 12)
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts" / "evaluate_rewards.py"), "--checkpoints", str(tmp_path / "a.pth"),
           str(tmp_path / "run"), str(tmp_path / "vip.pth"), "--eval_data", str(tmp_path / "eval"), "--out", str(out), "--tasks", "toy-reach",
           "--unseen_tasks", "--num_per_set", "2", "--episode_length", str(TOY.episode_length), "--workers", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics["models"]) == ["a", "run:refined", "run:start", "vip"]
    vip = metrics["models"]["vip"]["pooled"]  # a baseline: rank metrics on its values, no progress-scale ones
    assert vip["success_auroc"] is not None and vip["voc"] is not None
    assert vip["success_accuracy"] is None and vip["ood_mu"] is None
    assert metrics["eval_data"]["settings"]["image_size"] == 16  # the largest model's; the others resize
    pooled = metrics["models"]["a"]["pooled"]
    for key in ("voc", "voc_r", "unseen_voc", "success_auroc", "success_accuracy", "ranking_tau",
                "ranking_tau_reward", "succ_fail_diff", "ood_mu", "ood_mu_parked", "dense_alignment", "confusion_gap"):
        assert key in pooled
    assert pooled["ood_mu_parked"] is not None  # the parked group is scored like the others
    assert metrics["models"]["a"]["tasks"]["toy-reach"]["num_rollouts"] == {g: 2 for g in GROUPS}
    assert metrics["models"]["run:refined"]["confusion"]["tasks"] == ["toy-reach"]
    report = (out / "report.md").read_text()
    assert "| metric | a | run:start | run:refined | vip |" in report
    for name in ("roc.png", "progress_a.png", "progress_run_refined.png", "confusion_run_start.png"):
        assert (out / name).stat().st_size > 0


def test_cli_refuses_frames_unlike_the_training_data(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import evaluate_rewards
    finally:
        sys.path.pop(0)
    generate_demos(tmp_path / "demos", ["toy-reach"], num_train=1, num_test=0, settings=TOY, workers=1, progress=False)
    save_reward_model(ProgressModel("convnet", image_size=16), tmp_path / "m.pth",
                      provenance={"data_path": str(tmp_path / "demos"), "tasks": ["toy-reach"]})
    with pytest.raises(SystemExit) as err:
        evaluate_rewards.main(["--checkpoints", str(tmp_path / "m.pth"), "--eval_data", str(tmp_path / "eval"),
                               "--out", str(tmp_path / "out"), "--tasks", "toy-reach", "--unseen_tasks",
                               "--num_per_set", "2", "--episode_length", "9", "--workers", "1"])
    message = str(err.value)
    assert message.startswith("error: m was trained on frames made with other settings") and "episode_length" in message
    assert "\n" not in message and not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_cli_unseen_metaworld_task(tmp_path):
    save_reward_model(ProgressModel("convnet", image_size=32), tmp_path / "a.pth")
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "scripts" / "evaluate_rewards.py"), "--checkpoints", str(tmp_path / "a.pth"),
           "--eval_data", str(tmp_path / "eval"), "--out", str(out), "--tasks", "toy-reach", "--unseen_tasks",
           "reach-v3", "--num_per_set", "2", "--episode_length", "4", "--workers", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())["models"]["a"]
    assert set(m["unseen_voc"]) == {"reach"} and m["confusion"]["tasks"] == ["toy-reach", "reach"]
    assert not (tmp_path / "eval" / "random" / "reach").exists()  # unseen tasks: expert rollouts only


def test_generate_negatives_script(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import generate_negatives
    finally:
        sys.path.pop(0)
    argv = ["--out", str(tmp_path), "--tasks", "toy-reach", "--num", "1", "--kinds", "parked", "random",
            "--image_size", "16", "--episode_length", "4", "--workers", "1"]
    assert generate_negatives.main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parked", "random"]
    assert (tmp_path / "parked" / "toy-reach" / "train" / "0" / "4.png").is_file()
    with pytest.raises(SystemExit):
        generate_negatives.main([*argv[:2], "--num", "0"])
    assert "--num must be >= 1" in capsys.readouterr().err
