#!/usr/bin/env bash
# GPU check, one script, at most ~8 minutes on one GPU:
#   1. the CUDA-path tests (tests/test_cuda.py: reward model, agent update, a tiny train_mw.py run
#      with device=cuda, DDP with nccl in one process);
#   2. the benchmarks on the GPU (agent update and reward-model training, fp32 vs bf16, and the
#      precision `auto` picks there);
#   3. a pixel drawer-open run with the paper's agent settings (DrQ-v2, 84 px, batch 256) on a
#      reward model pretrained on the spot, for the minutes left; frames/s and eval success.
# Everything goes to the folder given as argument, else $OUT, else ./gpu_check_out; summary.txt
# collects the numbers. On a machine without a CUDA GPU it says so in one line and exits 0.
#
#   bash scripts/gpu_check.sh [OUT_DIR]          # BUDGET_S=480 by default
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu_check_out}}"
BUDGET_S="${BUDGET_S:-480}"
if [ -x .venv/bin/python ]; then PY="${PYTHON:-.venv/bin/python}"; else PY="${PYTHON:-python3}"; fi
export MUJOCO_GL="${MUJOCO_GL:-egl}"

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is false); nothing to check"
  exit 0
fi

mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
SUMMARY="$OUT_DIR/summary.txt"
START=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
{
  echo "gpu_check $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  "$PY" -c "import torch; from video2reward.precision import resolve_precision, hardware_summary; \
print('torch', torch.__version__, 'cuda', torch.version.cuda); print(hardware_summary()); \
print(resolve_precision('auto', 'cuda').describe())"
} | tee "$SUMMARY"

echo "== 1. CUDA-path tests" | tee -a "$SUMMARY"
timeout 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT_DIR/tests.log" | tail -3 | tee -a "$SUMMARY"

echo "== 2. benchmarks on the GPU" | tee -a "$SUMMARY"
timeout 90 "$PY" scripts/bench_agent.py --device cuda --batch-size 256 --iters 5 --precision fp32 bf16 auto \
  > "$OUT_DIR/bench_agent.log" 2>&1
sed -n '/agent update/,/^$/p' "$OUT_DIR/bench_agent.log" | tee -a "$SUMMARY"
timeout 90 "$PY" scripts/bench_reward_training.py --device cuda --backbone convnet_spatial --batch_size 1024 \
  --steps 5 --precision fp32 bf16 > "$OUT_DIR/bench_reward_training.log" 2>&1
tail -5 "$OUT_DIR/bench_reward_training.log" | tee -a "$SUMMARY"

RL_S=$(( $(left) - 15 ))
echo "== 3. pixel drawer-open, DrQ-v2 paper settings, ${RL_S}s" | tee -a "$SUMMARY"
if [ "$RL_S" -gt 60 ]; then
  RUN="$OUT_DIR/drawer_open"
  timeout -s TERM "$RL_S" "$PY" DrM/train_mw.py task=drawer-open agent=drqv2 device=cuda seed=0 \
    "hydra.run.dir=$RUN" "reward.checkpoint=$OUT_DIR/reward/drawer-open.pth" reward.pretrain_if_missing=true \
    "exp_data_path=$OUT_DIR/demos" "pretrain.tasks=[drawer-open]" demos.num_train=10 demos.num_test=2 \
    pretrain.steps=300 num_seed_frames=4000 eval_every_frames=5000 num_eval_episodes=5 save_video=false \
    > "$OUT_DIR/drawer_open.log" 2>&1
  "$PY" - "$RUN" <<'EOF' | tee -a "$SUMMARY"
import csv, sys
from pathlib import Path
run = Path(sys.argv[1])
def rows(name):
    path = run / name
    return list(csv.DictReader(open(path, newline=""))) if path.exists() else []
train, evals = rows("train.csv"), rows("eval.csv")
if train:
    last = train[-1]
    print(f"frames {float(last['frame']):.0f} in {float(last['total_time']):.0f} s; last logged fps {float(last['fps']):.1f}")
for r in evals:
    print(f"eval @ {float(r['frame']):.0f} frames: success {float(r['success_rate']):.2f}")
if not train:
    print("no training rows (see drawer_open.log)")
EOF
else
  echo "skipped: not enough time left" | tee -a "$SUMMARY"
fi
echo "gpu_check done in $(( $(date +%s) - START )) s; outputs in $OUT_DIR" | tee -a "$SUMMARY"
