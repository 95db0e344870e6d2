"""The RL results table: run a task x reward_model x seed sweep of DrM/train_mw.py, then tabulate it.

    python scripts/rl_table.py run --out SWEEP --tasks reach drawer-open door-open \
        --reward_models ours sparse env --seeds 0 1 --frames 100000 [--parallel 2] [--threads_per_run 1] \
        [--extra key=value ...]
    python scripts/rl_table.py report --out SWEEP [--frames N]

`run` is resumable: rerun the same command after an interruption; done cells (an eval at >= --frames
frames in eval.csv) are skipped, the others continue from their snapshot.pt. It ends with `report`,
which writes SWEEP/results.json, results.md and curves.png (rules and statistics: docs/rl.md,
"Results table"). Exit status 1 when a cell failed or on an error (one line, PROGRESSOR_DEBUG=1 for
the traceback).
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys

from drm.envs import TASKS, canonical_task
from drm.rewards import REWARD_MODELS
from drm.lab.rl_table import DEFAULT_REPS, SWEEP_KEYS, Sweep, report, run_sweep, summary_table
from video2reward.errors import one_line_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    stats = argparse.ArgumentParser(add_help=False)
    stats.add_argument("--out", required=True, help="the sweep folder")
    stats.add_argument("--reps", type=int, default=DEFAULT_REPS, help="bootstrap resamples")
    stats.add_argument("--bootstrap_seed", type=int, default=0, help="seed of the bootstrap (same files, same CIs)")
    run = sub.add_parser("run", parents=[stats], help="run the sweep's missing cells, then report")
    run.add_argument("--tasks", nargs="+", required=True)
    run.add_argument("--reward_models", nargs="+", required=True,
                     help=f"rows: {', '.join(REWARD_MODELS)}, or the label of a --variant")
    run.add_argument("--variant", nargs="+", action="append", default=[], metavar="LABEL REWARD_MODEL [KEY=VALUE",
                     help="a row of its own: LABEL REWARD_MODEL KEY=VALUE..., e.g. --variant ours_delta ours "
                          "reward.form=delta (repeat for more); list LABEL in --reward_models")
    run.add_argument("--seeds", nargs="+", type=int, required=True)
    run.add_argument("--frames", type=int, required=True, help="num_train_frames of every run: the budget")
    run.add_argument("--parallel", type=int, default=1, help="runs at a time")
    run.add_argument("--threads_per_run", type=int, default=None,
                     help="num_threads and OMP/MKL threads of each run (default: CPU count / --parallel)")
    run.add_argument("--extra", nargs="*", default=[], metavar="KEY=VALUE",
                     help="further train_mw.py overrides for every run, e.g. agent=drm_mw eval_every_frames=20000")
    run.add_argument("--train_cmd", default=None, help=argparse.SUPPRESS)  # tests: a stand-in for train_mw.py
    rep = sub.add_parser("report", parents=[stats], help="write results.json, results.md and curves.png")
    rep.add_argument("--frames", type=int, default=None, help="the budget (default: the sweep's)")
    args = p.parse_args(argv)
    if args.frames is not None and args.frames <= 0:
        p.error(f"--frames must be > 0, got {args.frames}")
    if args.reps < 1:
        p.error(f"--reps must be >= 1, got {args.reps}")
    if args.command == "run":
        if args.parallel < 1 or (args.threads_per_run is not None and args.threads_per_run < 1):
            p.error("--parallel and --threads_per_run must be >= 1")
        try:
            args.tasks = list(dict.fromkeys(canonical_task(t, TASKS) for t in args.tasks))
        except ValueError as e:
            p.error(str(e))
        for override in args.extra:
            key = override.split("=", 1)[0].lstrip("+~")
            if "=" not in override:
                p.error(f"--extra takes key=value overrides, got {override!r}")
            if key in SWEEP_KEYS:
                p.error(f"--extra {override!r}: {key} is set by the sweep for each run")
        variants = {}
        for spec in args.variant:
            if len(spec) < 2 or spec[1] not in REWARD_MODELS or not all("=" in o for o in spec[2:]):
                p.error(f"--variant {' '.join(spec)}: want LABEL REWARD_MODEL [KEY=VALUE ...] with REWARD_MODEL one "
                        f"of {', '.join(REWARD_MODELS)}")
            if spec[0] in REWARD_MODELS or not re.fullmatch(r"[\w.+-]+", spec[0]):
                p.error(f"--variant label {spec[0]!r}: want a new name of letters, digits, _ . + -")
            for override in spec[2:]:
                if override.split("=", 1)[0].lstrip("+~") in SWEEP_KEYS:
                    p.error(f"--variant {spec[0]}: {override.split('=', 1)[0]} is set by the sweep for each run")
            variants[spec[0]] = spec[1:]
        args.variants = variants
        unknown = [r for r in args.reward_models if r not in REWARD_MODELS and r not in variants]
        if unknown:
            p.error(f"--reward_models {' '.join(unknown)}: not one of {', '.join(REWARD_MODELS)} nor a --variant label")
        args.reward_models = list(dict.fromkeys(args.reward_models))
        args.seeds = list(dict.fromkeys(args.seeds))
    return args


def main(argv: list[str] | None = None) -> int:
    """Errors end the script with one line (``PROGRESSOR_DEBUG=1``: with the traceback)."""
    args = parse_args(argv)
    with one_line_errors():
        failed = []
        if args.command == "run":
            sweep = Sweep(args.tasks, args.reward_models, args.seeds, args.frames, args.extra, args.variants)
            train_cmd = shlex.split(args.train_cmd) if args.train_cmd else None
            failed = run_sweep(args.out, sweep, args.parallel, args.threads_per_run, train_cmd)
        results = report(args.out, args.frames, args.reps, args.bootstrap_seed)
        print(f"eval success rate at {results['budget_frames']} frames, IQM [95% CI] (seeds done):")
        print("\n".join(summary_table(results)))
        print(f"wrote {args.out}/results.json, results.md and curves.png")
        if failed:
            print(f"{len(failed)} run(s) failed: {', '.join(c.name for c in failed)}", file=sys.stderr)
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
