#!/bin/bash
# Generate a full my_generator dataset, one file per track count per Slurm array task:
#   sbatch my_generator/generate.sh                    (from the repository root)
#   EVENTS=100000 SEED=3 OUT=data/big sbatch --array=0-49 my_generator/generate.sh
#   FLAGS="--realistic" OUT=data/realistic sbatch my_generator/generate.sh   (detector effects, any flags)
# Task i writes $OUT/<N>/my_generator_t<N>_<i>.root for N = 1..4. Each file's seed is derived
# from (SEED, N, i), so tasks are independent and a failed task can be rerun alone.
# Runs without Slurm too: SLURM_ARRAY_TASK_ID defaults to 0.
#SBATCH --job-name=my_generator
#SBATCH --array=0-9
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=01:00:00
#SBATCH --output=my_generator_%A_%a.log

set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
TASK=${SLURM_ARRAY_TASK_ID:-0}
EVENTS=${EVENTS:-10000}
SEED=${SEED:-0}
OUT=${OUT:-data/my_generator}
PYTHON=${PYTHON:-.venv/bin/python}
read -r -a EXTRA <<< "${FLAGS:-}"

"$PYTHON" my_generator/my_generator.py --events "$EVENTS" --tracks 1 2 3 4 --files 1 \
    --first-file "$TASK" --seed "$SEED" --out "$OUT" --quiet "${EXTRA[@]}"

# Alternative: the compiled ROOT macro (build products go to a per-task folder; the macro has no
# --overwrite check, no detector effects, and its seed is SEED * 1000 + TASK, not the Python twin's
# per-file seed; it returns a non-zero status on error, so `set -e` stops the job).
# BUILD=$(mktemp -d) && cp my_generator/my_generator.cxx "$BUILD"/
# for N in 1 2 3 4; do
#     CALL="$BUILD/my_generator.cxx+($N, $EVENTS, \"$OUT/$N/my_generator\", $TASK, $((SEED * 1000 + TASK)))"
#     "${ROOT:-.venv/bin/root}" -b -q -l "$CALL"
# done
