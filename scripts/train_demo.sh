#!/usr/bin/env bash
# Trains the shipped demo weights on the phantom cohort, resuming wherever it stopped.
# Safe to re-run (every step is resumable); run it in the background:
#   nohup scripts/train_demo.sh > runs/train_demo.log 2>&1 &
# The global stage is trained in two runs, as the shipped weights were: EDM objective for
# STEPS_EDM steps (runs/demo), then clean-sample (x0) prediction started from those
# weights (runs/demo_x0) up to STEPS_GLOBAL; the SR stage trains in runs/demo.
# Both use bf16 mixed precision where the CPU has native bf16 (--precision auto).
set -euo pipefail
cd "$(dirname "$0")/.."
SYNTHAUG=${SYNTHAUG:-.venv/bin/synthaug}
RUN=${RUN:-runs/demo}
RUN_X0=${RUN_X0:-runs/demo_x0}
STEPS_EDM=${STEPS_EDM:-4600}
STEPS_GLOBAL=${STEPS_GLOBAL:-20000}
STEPS_SR=${STEPS_SR:-20000}
THREADS=${THREADS:-2}

# 1. Cohorts (resumable): 300 training cases (seed 0) and a held-out test cohort (seed 1000).
$SYNTHAUG phantom --n 300 --out data/phantom_train --seed 0 --workers 2
$SYNTHAUG phantom --n 60 --out data/phantom_test --seed 1000 --workers 2

resume_flag() { [ -f "$1/run_$2.json" ] && echo --resume || true; }

# 2. Global stage, EDM objective (one stage at a time: two runs side by side share the cores badly).
OMP_NUM_THREADS=$THREADS $SYNTHAUG train --stage global --data data/phantom_train --out "$RUN" \
    --steps "$STEPS_EDM" --batch-size 4 --lr 3e-4 --checkpoint-every 200 --no-progress $(resume_flag "$RUN" global)

# 3. Global stage, x0 objective from the EDM weights (--init-from only applies to a fresh start).
mkdir -p "$RUN_X0"
OMP_NUM_THREADS=$THREADS $SYNTHAUG train --stage global --objective x0 --init-from "$RUN" --data data/phantom_train \
    --out "$RUN_X0" --steps "$STEPS_GLOBAL" --batch-size 4 --lr 3e-4 --checkpoint-every 100 --no-progress \
    $(resume_flag "$RUN_X0" global)

# 4. SR stage.
OMP_NUM_THREADS=$THREADS $SYNTHAUG train --stage sr --data data/phantom_train --out "$RUN" \
    --steps "$STEPS_SR" --batch-size 2 --lr 3e-4 --checkpoint-every 100 --no-progress $(resume_flag "$RUN" sr)
