#!/usr/bin/env bash
# Trains the shipped demo weights on the phantom cohort, resuming wherever it stopped.
# Safe to re-run (every step is resumable); run it in the background:
#   nohup scripts/train_demo.sh > runs/train_demo.log 2>&1 &
# STEPS_GLOBAL / STEPS_SR set the total steps (default 20000 each).
set -euo pipefail
cd "$(dirname "$0")/.."
SYNTHAUG=${SYNTHAUG:-.venv/bin/synthaug}
RUN=${RUN:-runs/demo}
STEPS_GLOBAL=${STEPS_GLOBAL:-20000}
STEPS_SR=${STEPS_SR:-20000}

# 1. Cohorts (resumable): 300 training cases (seed 0) and a held-out test cohort (seed 1000).
$SYNTHAUG phantom --n 300 --out data/phantom_train --seed 0 --workers 2
$SYNTHAUG phantom --n 60 --out data/phantom_test --seed 1000 --workers 2

resume_flag() { [ -f "$RUN/run_$1.json" ] && echo --resume || true; }

# 2. Both stages, side by side (one thread each on the 2-core machine).
OMP_NUM_THREADS=1 $SYNTHAUG train --stage global --data data/phantom_train --out "$RUN" \
    --steps "$STEPS_GLOBAL" --batch-size 4 --lr 3e-4 --checkpoint-every 200 --no-progress $(resume_flag global) &
OMP_NUM_THREADS=1 $SYNTHAUG train --stage sr --data data/phantom_train --out "$RUN" \
    --steps "$STEPS_SR" --batch-size 2 --lr 3e-4 --checkpoint-every 100 --no-progress $(resume_flag sr) &
wait
