"""The RL results table: final values, IQM / mean with seeded bootstrap CIs, the report files, and the
resumable sweep runner (with a stand-in for train_mw.py: no RL here)."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from drm.logger import CSVLog
from drm.lab.rl_table import (Cell, RLTableError, Sweep, final_row, hydra_value, interval_estimates, load_run, report,
                          run_sweep, summarize, train_command)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "rl_table.py"
REPS = 200  # bootstrap resamples: enough for the checks, fast
BUDGET = 1000

# final success rates of a 2 tasks x 2 reward models x 3 seeds sweep
FINALS = {("reach", "ours"): [0.2, 0.5, 0.8], ("reach", "env"): [0.6, 0.6, 0.6],
          ("door-open", "ours"): [0.0, 0.4, 1.0], ("door-open", "env"): [0.1, 0.3, 0.2]}


def write_evals(root, task, rm, seed, rows):
    """``eval.csv`` as the workspace writes it (its own CSVLog)."""
    run_dir = Cell(task, rm, seed).run_dir(root)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = CSVLog(run_dir / "eval.csv")
    for frame, success in rows:
        log.append({"frame": frame, "success_rate": success, "episode_reward": 3.0,
                    "episode_env_reward": 1000 * success, "total_time": frame * 3.6})
    return run_dir


@pytest.fixture
def sweep_dir(tmp_path):
    for (task, rm), finals in FINALS.items():
        for seed, final in enumerate(finals):
            write_evals(tmp_path, task, rm, seed, [(0, 0.0), (500, final / 2), (BUDGET, final)])
    Sweep(["reach", "door-open"], ["ours", "env"], [0, 1, 2], BUDGET).save(tmp_path)
    return tmp_path


def test_cells_final_values_mean_iqm_and_cis(sweep_dir):
    results = summarize(sweep_dir, Sweep.load(sweep_dir), reps=REPS)
    for (task, rm), finals in FINALS.items():
        cell = results["cells"][task][rm]
        assert [cell["runs"][f"s{s}"]["success_rate"] for s in range(3)] == finals
        assert all(cell["runs"][f"s{s}"]["frame"] == BUDGET for s in range(3))
        assert cell["num_seeds"] == 3
        assert cell["mean"] == pytest.approx(np.mean(finals))
        assert cell["iqm"] == pytest.approx(np.mean(finals))  # 3 runs: a 25 % trim cuts none
        for key in ("iqm", "mean"):
            lo, hi = cell[f"{key}_ci"]
            assert lo <= cell[key] <= hi
            assert min(finals) - 1e-9 <= lo and hi <= max(finals) + 1e-9
    assert results["cells"]["reach"]["env"]["iqm_ci"] == pytest.approx([0.6, 0.6])  # all seeds agree: [x, x]
    assert results["cells"]["reach"]["env"]["mean_ci"] == pytest.approx([0.6, 0.6])
    assert results["cells"]["reach"]["ours"]["runs"]["s0"]["total_time"] == pytest.approx(3600.0)
    # all tasks, ours: runs x tasks = [[0.2, 0.0], [0.5, 0.4], [0.8, 1.0]]; IQM of the 6 trims one at each end
    ours = results["all_tasks"]["ours"]
    assert ours["seeds"] == [0, 1, 2] and ours["num_seeds"] == 3
    assert ours["iqm"] == pytest.approx(np.mean([0.2, 0.4, 0.5, 0.8]))
    assert ours["mean"] == pytest.approx((0.5 + 1.4 / 3) / 2)
    assert ours["iqm_ci"][0] <= ours["iqm"] <= ours["iqm_ci"][1]
    assert results["missing"] == [] and results["not_done"] == []


def test_iqm_by_hand_on_eight_seeds(tmp_path):
    finals = [0.3, 0.0, 1.0, 0.1, 0.6, 0.2, 0.5, 0.4]
    for seed, final in enumerate(finals):
        write_evals(tmp_path, "reach", "ours", seed, [(0, 0.0), (BUDGET, final)])
    results = summarize(tmp_path, Sweep(["reach"], ["ours"], list(range(8)), BUDGET), reps=REPS)
    cell = results["cells"]["reach"]["ours"]
    assert cell["iqm"] == pytest.approx(0.35)  # sorted [0 .1 | .2 .3 .4 .5 | .6 1]: the middle four
    assert cell["mean"] == pytest.approx(3.1 / 8)
    assert results["curves"]["reach"]["ours"]["band"] == "95% bootstrap CI"


def test_interval_estimates_are_seeded_and_leave_numpy_alone():
    scores = np.array([[0.1, 0.9], [0.5, 0.4], [0.7, 0.2], [0.3, 0.3]])
    state = np.random.get_state()
    first = interval_estimates(scores, reps=REPS, seed=3)
    assert interval_estimates(scores, reps=REPS, seed=3) == first
    assert interval_estimates(scores, reps=REPS, seed=4) != first
    after = np.random.get_state()
    assert all(np.array_equal(a, b) for a, b in zip(state, after))
    degenerate = interval_estimates(np.full((3, 1), 0.5), reps=REPS)
    assert degenerate["iqm_ci"] == degenerate["mean_ci"] == pytest.approx([0.5, 0.5])


def test_final_row_is_the_first_eval_at_or_past_the_budget():
    evals = [{"frame": f, "success_rate": s} for f, s in ((0, 0.0), (600, 0.3), (1200, 0.7), (1800, 0.9))]
    assert final_row(evals, 1200)["frame"] == 1200
    assert final_row(evals, 1000)["frame"] == 1200  # the run's last episode ended past the budget
    assert final_row(evals, 600)["success_rate"] == 0.3  # a longer run, reported at a smaller budget
    assert final_row(evals, 2000) is None  # not done


def test_unfinished_and_missing_cells(tmp_path):
    write_evals(tmp_path, "reach", "ours", 0, [(0, 0.0), (BUDGET, 0.4)])
    write_evals(tmp_path, "reach", "ours", 1, [(0, 0.0), (500, 0.9)])  # stopped halfway
    write_evals(tmp_path, "reach", "env", 0, [(0, 0.0), (BUDGET, 0.2)])
    write_evals(tmp_path, "reach", "env", 1, [(0, 0.0), (BUDGET, 0.6)])
    write_evals(tmp_path, "door-open", "env", 0, [(0, 0.0), (BUDGET, 1.0)])
    Sweep(["reach", "door-open"], ["ours", "env"], [0, 1], BUDGET).save(tmp_path)
    results = report(tmp_path, reps=REPS)
    run = load_run(Cell("reach", "ours", 1), tmp_path, BUDGET)
    assert not run.done and run.last_frame == 500
    assert results["not_done"] == ["reach/ours/s1"]
    assert results["missing"] == ["door-open/ours/s0", "door-open/ours/s1", "door-open/env/s1"]
    reach = results["cells"]["reach"]["ours"]
    assert reach["num_seeds"] == 1 and reach["iqm"] == pytest.approx(0.4)
    assert reach["iqm_ci"] == pytest.approx([0.4, 0.4])
    assert reach["runs"]["s1"] == {"done": False, "success_rate": None, "env_return": None, "frame": None,
                                   "last_eval_frame": 500, "total_time": pytest.approx(1800.0)}
    assert "iqm" not in results["cells"]["door-open"]["ours"]
    assert results["all_tasks"]["ours"]["num_seeds"] == 0  # no ours run on door-open: no aggregate
    assert results["all_tasks"]["env"]["seeds"] == [0]  # the seed done on every task
    assert results["curves"]["reach"]["env"]["band"] == "min-max"
    md = (tmp_path / "results.md").read_text()
    assert "| door-open | — | 1.00 [1.00, 1.00] (1 seed) |" in md
    assert "| reach | 0.40 [0.40, 0.40] (1 seed) | 0.40 [0.20, 0.60] (2 seeds) |" in md
    assert "not done (500 frames)" in md and "door-open/ours/s0" in md


def test_report_files_and_json_round_trip(sweep_dir):
    results = report(sweep_dir, reps=REPS)
    assert json.loads((sweep_dir / "results.json").read_text()) == results
    assert (sweep_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (sweep_dir / "results.md").read_text()
    assert f"**{BUDGET} frames**" in md and "Seeds 0, 1, 2" in md
    assert "| task | ours | env |" in md and "| reach | 0.50 [" in md and "(3 seeds) |" in md
    assert "| **all tasks** | 0.48 [" in md  # IQM 0.475
    assert "## Wall time per run" in md and "| reach | 1.00 | 1.00 |" in md
    assert "| reach | ours | 0.20 (env 200) | 0.50 (env 500) | 0.80 (env 800) |" in md  # the dense return beside
    first = (sweep_dir / "results.json").read_bytes()
    report(sweep_dir, reps=REPS)
    assert (sweep_dir / "results.json").read_bytes() == first  # seeded bootstrap: the same numbers


def test_curves_interpolate_onto_a_common_grid(tmp_path):
    write_evals(tmp_path, "reach", "ours", 0, [(0, 0.0), (500, 0.5), (BUDGET, 1.0)])
    write_evals(tmp_path, "reach", "ours", 1, [(0, 0.0), (BUDGET, 0.0), (1500, 0.2)])
    results = summarize(tmp_path, Sweep(["reach"], ["ours"], [0, 1], BUDGET), reps=REPS)
    c = results["curves"]["reach"]["ours"]
    assert c["frames"] == [0, 500, 1000]
    assert c["mean"] == pytest.approx([0.0, 0.25, 0.5])  # seed 1 interpolated to 0 at 500
    assert c["lo"] == pytest.approx([0.0, 0.0, 0.0]) and c["hi"] == pytest.approx([0.0, 0.5, 1.0])


def test_report_without_sweep_file_needs_the_budget(tmp_path):
    write_evals(tmp_path, "reach", "ours", 4, [(0, 0.0), (BUDGET, 0.5)])
    with pytest.raises(RLTableError, match="sweep.json not found"):
        report(tmp_path, reps=REPS)
    results = report(tmp_path, budget=BUDGET, reps=REPS)
    assert (results["tasks"], results["reward_models"], results["seeds"]) == (["reach"], ["ours"], [4])


@pytest.mark.parametrize("content, problem", [
    ("frame,episode_reward\n0,1.0\n", "no column 'success_rate'"),
    ("frame,success_rate\n0,0.0\n1000,abc\n", "line 3"),
    ("frame,success_rate,total_time\n0,0.0,1\n1000\n", "line 3 has no success_rate"),
    ("", "no column 'frame', 'success_rate'"),
])
def test_malformed_eval_csv_is_an_error_naming_the_file(tmp_path, content, problem):
    run_dir = Cell("reach", "ours", 0).run_dir(tmp_path)
    run_dir.mkdir(parents=True)
    (run_dir / "eval.csv").write_text(content)
    Sweep(["reach"], ["ours"], [0], BUDGET).save(tmp_path)
    with pytest.raises(RLTableError) as err:
        report(tmp_path, reps=REPS)
    assert str(run_dir / "eval.csv") in str(err.value) and problem in str(err.value)
    cli = _load_cli()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", "--out", str(tmp_path), "--reps", str(REPS)])
    assert str(exit_.value.code).startswith(f"error: {run_dir / 'eval.csv'}: malformed")


def test_hydra_value_quotes_what_hydra_would_misread():
    parser = OverridesParser.create()
    for path in ("/tmp/sweep/runs/reach/ours/s0", "/tmp/my sweep/a,b=c/s0", "/tmp/it's/s0"):
        assert parser.parse_override(f"hydra.run.dir={hydra_value(path)}").value() == path
    cmd = train_command(Cell("reach", "env", 2), Path("/x"), 500, 1, ["agent=drm_mw"])
    assert cmd[:2] == [sys.executable, str(ROOT / "DrM" / "train_mw.py")]
    assert cmd[2:] == ["task=reach", "reward_model=env", "seed=2", "num_train_frames=500", "num_threads=1",
                       "hydra.run.dir=/x/runs/reach/env/s2", "agent=drm_mw"]


# --------------------------------------------------------------------------------- the sweep runner
FAKE_TRAIN = textwrap.dedent("""
    # stands in for train_mw.py: checks its overrides, fails on (sparse, seed 1), else writes eval.csv
    import csv, os, sys, time
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    run_dir = args["hydra.run.dir"]
    sweep = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(run_dir))))
    with open(os.path.join(sweep, "events.txt"), "a") as f:
        f.write(f"{time.time()} 1 {args['task']}/{args['reward_model']}/s{args['seed']}\\n")
    assert args["num_threads"] == "1" and os.environ["OMP_NUM_THREADS"] == "1" and args["eval_every_frames"] == "500"
    time.sleep(0.3)
    try:
        if args["reward_model"] == "sparse" and args["seed"] == "1":
            print("error: boom", flush=True)
            sys.exit(1)
        frames = int(args["num_train_frames"])
        success = 0.1 * int(args["seed"]) + (0.5 if args["reward_model"] == "ours" else 0.0)
        with open(os.path.join(run_dir, "eval.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerows([["frame", "success_rate", "total_time"], [0, 0.0, 1.0], [frames, success, 2.0]])
        print("done", flush=True)
    finally:
        with open(os.path.join(sweep, "events.txt"), "a") as f:
            f.write(f"{time.time()} -1\\n")
""")


def _fake_train(tmp_path) -> list[str]:
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    return [sys.executable, str(script)]


def _max_running(events: Path) -> int:
    steps = sorted((float(t), int(d)) for t, d, *_ in (line.split() for line in events.read_text().splitlines()))
    return int(np.max(np.cumsum([d for _, d in steps])))


def test_runner_skips_done_cells_resumes_others_and_reports_failures(tmp_path):
    sweep_dir = tmp_path / "sweep"
    write_evals(sweep_dir, "reach", "ours", 0, [(0, 0.0), (BUDGET, 0.9)])  # done: not rerun
    write_evals(sweep_dir, "reach", "ours", 1, [(0, 0.0), (500, 0.3)])  # interrupted: restarted
    sweep = Sweep(["reach"], ["ours", "sparse"], [0, 1], BUDGET, ["eval_every_frames=500"])
    failed = run_sweep(sweep_dir, sweep, parallel=2, threads_per_run=1, train_cmd=_fake_train(tmp_path),
                       progress=False, poll_s=0.05)
    assert failed == [Cell("reach", "sparse", 1)]
    started = [line.split()[2] for line in (sweep_dir / "events.txt").read_text().splitlines() if " 1 " in line]
    assert sorted(started) == ["reach/ours/s1", "reach/sparse/s0", "reach/sparse/s1"]
    assert _max_running(sweep_dir / "events.txt") <= 2
    assert not (Cell("reach", "ours", 0).run_dir(sweep_dir) / "console.log").exists()
    log = (Cell("reach", "sparse", 1).run_dir(sweep_dir) / "console.log").read_text()
    assert "error: boom" in log and "num_train_frames=1000" in log
    assert load_run(Cell("reach", "ours", 1), sweep_dir, BUDGET).final["success_rate"] == pytest.approx(0.6)
    assert load_run(Cell("reach", "sparse", 0), sweep_dir, BUDGET).done
    assert Sweep.load(sweep_dir) == sweep

    # rerun: only the failed cell starts again
    (sweep_dir / "events.txt").unlink()
    failed = run_sweep(sweep_dir, sweep, parallel=2, threads_per_run=1, train_cmd=_fake_train(tmp_path),
                       progress=False, poll_s=0.05)
    assert failed == [Cell("reach", "sparse", 1)]
    assert [ln.split()[2] for ln in (sweep_dir / "events.txt").read_text().splitlines() if " 1 " in ln] == [
        "reach/sparse/s1"]


def test_cli_run_completes_other_cells_and_exits_nonzero(tmp_path):
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, str(SCRIPT), "run", "--out", str(sweep_dir), "--tasks", "reach", "--reward_models",
           "ours", "sparse", "--seeds", "1", "--frames", str(BUDGET), "--parallel", "2", "--threads_per_run",
           "1", "--reps", str(REPS), "--extra", "eval_every_frames=500",
           "--train_cmd", " ".join(_fake_train(tmp_path))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "failed   reach/sparse/s1 (exit 1): error: boom; log " in out
    assert "1 run(s) failed: reach/sparse/s1" in out
    results = json.loads((sweep_dir / "results.json").read_text())
    assert results["cells"]["reach"]["ours"]["iqm"] == pytest.approx(0.6)
    assert results["cells"]["reach"]["sparse"]["num_seeds"] == 0 and results["not_done"] == []
    assert results["missing"] == ["reach/sparse/s1"]
    assert (sweep_dir / "results.md").exists() and (sweep_dir / "curves.png").exists()


def _load_cli():
    spec = importlib.util.spec_from_file_location("rl_table_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variants_are_rows_of_their_own_with_their_overrides(tmp_path):
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, str(SCRIPT), "run", "--out", str(sweep_dir), "--tasks", "reach", "--reward_models",
           "ours", "ours_delta", "--seeds", "0", "--frames", str(BUDGET), "--threads_per_run", "1", "--reps",
           str(REPS), "--extra", "eval_every_frames=500", "--variant", "ours_delta", "ours", "reward.form=delta",
           "--train_cmd", " ".join(_fake_train(tmp_path))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = (Cell("reach", "ours_delta", 0).run_dir(sweep_dir) / "console.log").read_text()
    assert "reward_model=ours" in log and log.index("eval_every_frames=500") < log.index("reward.form=delta")
    assert "reward.form" not in (Cell("reach", "ours", 0).run_dir(sweep_dir) / "console.log").read_text()
    results = json.loads((sweep_dir / "results.json").read_text())
    assert results["reward_models"] == ["ours", "ours_delta"]
    assert results["variants"] == {"ours_delta": ["ours", "reward.form=delta"]}
    assert results["cells"]["reach"]["ours_delta"]["num_seeds"] == 1
    assert Sweep.load(sweep_dir).variants == {"ours_delta": ["ours", "reward.form=delta"]}
    assert "Row `ours_delta`: `reward_model=ours reward.form=delta`." in (sweep_dir / "results.md").read_text()
    with pytest.raises(RLTableError, match="another name"):  # one label, one meaning, for the sweep's life
        run_sweep(sweep_dir, Sweep(["reach"], ["ours_delta"], [0], BUDGET, [], {"ours_delta": ["ours", "x=1"]}),
                  parallel=1, threads_per_run=1, train_cmd=_fake_train(tmp_path), progress=False, poll_s=0.05)
    bad = subprocess.run([*cmd[:2], "run", "--out", str(sweep_dir), "--tasks", "reach", "--reward_models", "mine",
                          "--seeds", "0", "--frames", "10"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not one of" in bad.stderr and "--variant" in bad.stderr
