#!/usr/bin/env bash
# Trains the shipped demo weights on the phantom cohort, resuming wherever it stopped.
# Safe to re-run (every step is resumable); run it in the background:
#   nohup scripts/train_demo.sh > runs/train_demo.log 2>&1 &
# Each stage is trained as the shipped weights were, in three phases, each started from
# the previous phase's weights:
#   1. EDM objective, runs/demo (global STEPS_EDM_GLOBAL, SR STEPS_EDM_SR steps);
#   2. clean-sample (x0) prediction with EDM's image noise levels, runs/demo_x0
#      (global STEPS_X0_GLOBAL, SR STEPS_X0_SR steps);
#   3. x0 with the noise levels that reach the samplers' start (both stages' default,
#      docs/training.md "Noise levels"), runs/demo_x0w: the global stage up to STEPS_GLOBAL,
#      the SR stage STEPS_X0W_SR steps;
#   4. from phase 3's weights, alternating between the stages in chunks so that an
#      interrupted session leaves both advanced: the global stage with every lesion on the
#      global grid (lesion_rule "every", docs/training.md "Lesions on the global grid"),
#      runs/demo_les, up to STEPS_GLOBAL; the SR stage with every lesion and label-guided
#      upsampling (docs/training.md "Label-guided upsampling"), runs/demo_lab, up to STEPS_SR;
#   5. the SR stage from phase 4's weights on the partial-volume-corrected label-guided
#      upsampling (docs/training.md "Partial-volume correction"), runs/demo_pvc, STEPS_PVC_SR
#      steps. The shipped SR stage is phase 4 stopped at 1,100 steps, then 1,300 of phase 5:
#      STEPS_SR=1100 STEPS_PVC_SR=1300. Calibrate afterwards (synthaug calibrate, both stages).
# Phases 1-3 ran before label-guided upsampling existed: their configs pin "trilinear".
# bf16 mixed precision where the CPU has it (--precision auto).
set -euo pipefail
cd "$(dirname "$0")/.."
SYNTHAUG=${SYNTHAUG:-.venv/bin/synthaug}
RUN=${RUN:-runs/demo}
RUN_X0=${RUN_X0:-runs/demo_x0}
RUN_X0W=${RUN_X0W:-runs/demo_x0w}
RUN_LES=${RUN_LES:-runs/demo_les}
RUN_LAB=${RUN_LAB:-runs/demo_lab}
RUN_PVC=${RUN_PVC:-runs/demo_pvc}
STEPS_EDM_GLOBAL=${STEPS_EDM_GLOBAL:-4600}
STEPS_EDM_SR=${STEPS_EDM_SR:-600}
STEPS_X0_GLOBAL=${STEPS_X0_GLOBAL:-2600}
STEPS_X0_SR=${STEPS_X0_SR:-1200}
STEPS_X0W_SR=${STEPS_X0W_SR:-1300}
STEPS_X0W_GLOBAL=${STEPS_X0W_GLOBAL:-5000}
STEPS_GLOBAL=${STEPS_GLOBAL:-20000}
STEPS_SR=${STEPS_SR:-20000}
STEPS_PVC_SR=${STEPS_PVC_SR:-6000}
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

# Settings of phases 1-2 (EDM's image noise levels), 3 and 4.
IMAGE_NOISE=scripts/noise_images.json
WIDE_NOISE=scripts/noise_wide.json
EVERY_LESION=scripts/wide_every.json
LABEL_SR=scripts/sr_label.json
PVC_SR=scripts/sr_pvc.json

# 1. EDM phase of each stage.
train global "$RUN" "$STEPS_EDM_GLOBAL" --objective edm --config "$IMAGE_NOISE"
train sr "$RUN" "$STEPS_EDM_SR" --objective edm --config "$IMAGE_NOISE"

# 2. x0 from the EDM weights (--init-from only applies to a fresh start).
train global "$RUN_X0" "$STEPS_X0_GLOBAL" --objective x0 --init-from "$RUN" --config "$IMAGE_NOISE"
train sr "$RUN_X0" "$STEPS_X0_SR" --objective x0 --init-from "$RUN" --config "$IMAGE_NOISE"

# 3. x0 with wide noise levels from the phase-2 weights.
train global "$RUN_X0W" "$STEPS_X0W_GLOBAL" --objective x0 --init-from "$RUN_X0" --config "$WIDE_NOISE"
train sr "$RUN_X0W" "$STEPS_X0W_SR" --objective x0 --init-from "$RUN_X0" --config "$WIDE_NOISE"

# 4. Every lesion on the global grid (global) / label-guided upsampling (SR), in alternating chunks.
mkdir -p "$RUN_LES" "$RUN_LAB"
while [ "$(step_of "$RUN_LES" global)" -lt "$STEPS_GLOBAL" ] || [ "$(step_of "$RUN_LAB" sr)" -lt "$STEPS_SR" ]; do
    g=$(( $(step_of "$RUN_LES" global) + CHUNK_GLOBAL )); [ "$g" -gt "$STEPS_GLOBAL" ] && g=$STEPS_GLOBAL
    s=$(( $(step_of "$RUN_LAB" sr) + CHUNK_SR )); [ "$s" -gt "$STEPS_SR" ] && s=$STEPS_SR
    train global "$RUN_LES" "$g" --objective x0 --init-from "$RUN_X0W" --config "$EVERY_LESION"
    train sr "$RUN_LAB" "$s" --objective x0 --init-from "$RUN_X0W" --config "$LABEL_SR"
done

# 5. SR stage on the partial-volume-corrected upsampling, from phase 4's weights.
train sr "$RUN_PVC" "$STEPS_PVC_SR" --objective x0 --init-from "$RUN_LAB" --config "$PVC_SR"
