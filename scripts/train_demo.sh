#!/usr/bin/env bash
# Trains the shipped demo weights on the phantom cohort, resuming wherever it stopped.
# Safe to re-run (every step is resumable); run it in the background:
#   nohup scripts/train_demo.sh > runs/train_demo.log 2>&1 &
# Each stage is trained as the shipped weights were: first with the EDM objective in
# runs/demo (global STEPS_EDM_GLOBAL, SR STEPS_EDM_SR steps), then with clean-sample (x0)
# prediction started from those weights in runs/demo_x0, up to STEPS_GLOBAL / STEPS_SR.
# The x0 phase alternates between the stages in chunks, so that an interrupted session
# leaves both advanced. bf16 mixed precision where the CPU has it (--precision auto).
set -euo pipefail
cd "$(dirname "$0")/.."
SYNTHAUG=${SYNTHAUG:-.venv/bin/synthaug}
RUN=${RUN:-runs/demo}
RUN_X0=${RUN_X0:-runs/demo_x0}
STEPS_EDM_GLOBAL=${STEPS_EDM_GLOBAL:-4600}
STEPS_EDM_SR=${STEPS_EDM_SR:-600}
STEPS_GLOBAL=${STEPS_GLOBAL:-20000}
STEPS_SR=${STEPS_SR:-20000}
CHUNK_GLOBAL=${CHUNK_GLOBAL:-2000}
CHUNK_SR=${CHUNK_SR:-1000}
THREADS=${THREADS:-2}   # one stage at a time: two runs side by side share 2 cores badly

# 1. Cohorts (resumable): 300 training cases (seed 0) and a held-out test cohort (seed 1000).
$SYNTHAUG phantom --n 300 --out data/phantom_train --seed 0 --workers 2
$SYNTHAUG phantom --n 60 --out data/phantom_test --seed 1000 --workers 2

resume_flag() { [ -f "$1/run_$2.json" ] && echo --resume || true; }
step_of() { python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['step'])" "$1/state_$2/latest.json" 2>/dev/null || echo 0; }
batch() { [ "$1" = global ] && echo 4 || echo 2; }
every() { [ "$1" = global ] && echo 200 || echo 100; }

train() {  # train STAGE RUN STEPS [extra args...]
    local stage=$1 run=$2 steps=$3; shift 3
    mkdir -p "$run"
    OMP_NUM_THREADS=$THREADS $SYNTHAUG train --stage "$stage" --data data/phantom_train --out "$run" --steps "$steps" \
        --batch-size "$(batch "$stage")" --lr 3e-4 --checkpoint-every "$(every "$stage")" --no-progress \
        $(resume_flag "$run" "$stage") "$@"
}

# 2. EDM phase of each stage.
train global "$RUN" "$STEPS_EDM_GLOBAL"
train sr "$RUN" "$STEPS_EDM_SR"

# 3. x0 phase from the EDM weights (--init-from only applies to a fresh start), in alternating chunks.
while [ "$(step_of "$RUN_X0" global)" -lt "$STEPS_GLOBAL" ] || [ "$(step_of "$RUN_X0" sr)" -lt "$STEPS_SR" ]; do
    g=$(( $(step_of "$RUN_X0" global) + CHUNK_GLOBAL )); [ "$g" -gt "$STEPS_GLOBAL" ] && g=$STEPS_GLOBAL
    s=$(( $(step_of "$RUN_X0" sr) + CHUNK_SR )); [ "$s" -gt "$STEPS_SR" ] && s=$STEPS_SR
    train global "$RUN_X0" "$g" --objective x0 --init-from "$RUN"
    train sr "$RUN_X0" "$s" --objective x0 --init-from "$RUN"
done
