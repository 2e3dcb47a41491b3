#!/usr/bin/env bash
# Fine-tunes both shipped stages on phantom version 2 (arms, FDG-visible structures, the liver
# re-check; docs/phantom.md), resuming wherever it stopped. Run it in the background:
#   nohup scripts/finetune_phantom_v2.sh > runs/finetune_v2.log 2>&1 &
# The training cohort's PET is the activity without the scanner (--scanner off): the networks
# learn the activity, and the cascade images it with the scanner model (docs/realism.md). Both
# stages start from the shipped weights with the shipped stages' settings (scripts/wide_every_thin.json,
# scripts/sr_pvc_thin.json) and alternate in chunks, so an interrupted session leaves both advanced.
# Afterwards: scripts/ship_weights.py into a copy, then synthaug calibrate (both stages) against
# data/phantom_v2_train, as in the model card's "Label and intensity calibration".
set -euo pipefail
cd "$(dirname "$0")/.."
SYNTHAUG=${SYNTHAUG:-.venv/bin/synthaug}
DATA=${DATA:-data/phantom_v2_train}
RUN_G=${RUN_G:-runs/ft_v2_global}
RUN_S=${RUN_S:-runs/ft_v2_sr}
STEPS_GLOBAL=${STEPS_GLOBAL:-1000}
STEPS_SR=${STEPS_SR:-600}
CHUNK_GLOBAL=${CHUNK_GLOBAL:-500}
CHUNK_SR=${CHUNK_SR:-300}
THREADS=${THREADS:-2}

$SYNTHAUG phantom --n 300 --out "$DATA" --seed 0 --version 2 --scanner off --workers 2

step_of() { python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['step'])" "$1/state_$2/latest.json" 2>/dev/null || echo 0; }
resume_flag() { [ -f "$1/run_$2.json" ] && echo --resume || true; }
train() {  # train STAGE RUN STEPS BATCH EVERY CONFIG
    mkdir -p "$2"
    OMP_NUM_THREADS=$THREADS $SYNTHAUG train --stage "$1" --data "$DATA" --out "$2" --steps "$3" --batch-size "$4" \
        --lr 3e-4 --checkpoint-every "$5" --objective x0 --init-from synthaug/weights --config "$6" --no-progress \
        $(resume_flag "$2" "$1")
}

while [ "$(step_of "$RUN_G" global)" -lt "$STEPS_GLOBAL" ] || [ "$(step_of "$RUN_S" sr)" -lt "$STEPS_SR" ]; do
    g=$(( $(step_of "$RUN_G" global) + CHUNK_GLOBAL )); [ "$g" -gt "$STEPS_GLOBAL" ] && g=$STEPS_GLOBAL
    s=$(( $(step_of "$RUN_S" sr) + CHUNK_SR )); [ "$s" -gt "$STEPS_SR" ] && s=$STEPS_SR
    train global "$RUN_G" "$g" 4 100 scripts/wide_every_thin.json
    train sr "$RUN_S" "$s" 2 50 scripts/sr_pvc_thin.json
done
echo "fine-tune done: global $(step_of "$RUN_G" global) steps, sr $(step_of "$RUN_S" sr) steps"
