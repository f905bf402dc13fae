#!/bin/bash
# Reconstruct many event files on a Slurm cluster: a job array, each array task takes its share of the files.
# Submit from the repository root (make the log folder first: mkdir -p runs):
#   sbatch --array=0-9 reconstruct.sh data/heldout/my_generator/realistic        # a folder (recursive *.root)
#   sbatch --array=0-3 reconstruct.sh files.txt                                  # a list: one path a line, # comments
#   sbatch --array=0-3 --export=ALL,OUT=runs/reco-real reconstruct.sh 'data/*/*.root' -- --clusterer hough
#   bash reconstruct.sh data/heldout/toyhaystack                                 # outside Slurm: all files, one task
# Arguments: INPUT... [-- FLAGS...]; an INPUT is a .root file, a folder, a (quoted) glob pattern or a text
# file listing inputs; FLAGS go to reconstruct.py unchanged (e.g. --overwrite, --batch-size 1024, --score).
# Inputs may also come from the environment: INPUTS="a.root b/" (used when no INPUT argument is given).
#
# The Slurm array is the scheduler: the sorted file list is the same in every task, and the task of
# index k (0-based within the array, whatever --array's first id and step) of N takes the files i with
# i % N == k, then runs  python reconstruct.py <its files> --out $OUT FLAGS.  One output per input, in
# $OUT (default runs/reco-<array job id>, runs/reco-local outside Slurm): input base names must differ,
# which is checked over the whole list before anything runs. Outside Slurm (no array variables) one
# task takes every file. A task with no file (more tasks than files) says so and succeeds.
# Environment: OUT, INPUTS, PYTHON (default python of the repository's .venv when present),
# RECONSTRUCT (the command to run instead of "$PYTHON reconstruct.py", e.g. "echo" for a dry run),
# REPO (the repository; default $SLURM_SUBMIT_DIR under Slurm, the folder of this script outside).
#
# CPU node (default): reconstruct.py runs TensorFlow on the task's cores.
#SBATCH --job-name=snemo-reco
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH -t 02:00:00
#SBATCH --output=runs/slurm-%x-%A_%a.out
#
# GPU node: add these two lines (remove one leading #) or pass them to sbatch; one GPU per array task.
##SBATCH --partition=gpu
##SBATCH --gres=gpu:1
# With a GPU the models run on it by themselves (TensorFlow takes the visible GPU); reading, views and
# writing stay on the CPU cores, so keep --cpus-per-task at 4 or more. On GPU nodes install
# requirements-gpu.txt (CUDA wheels) in the environment, or load your site's CUDA module here.

set -euo pipefail

if [ -n "${SLURM_JOB_ID:-}" ]; then
    REPO="${REPO:-${SLURM_SUBMIT_DIR:-$PWD}}"
else
    REPO="${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
fi
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python; fi
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
OUT="${OUT:-runs/reco-${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-local}}}"

die() { echo "reconstruct.sh: error: $*" >&2; exit 2; }

# ---- the inputs and the flags for reconstruct.py ------------------------------------------------
inputs=()
flags=()
while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then shift; flags=("$@"); break; fi
    inputs+=("$1")
    shift
done
if [ ${#inputs[@]} -eq 0 ] && [ -n "${INPUTS:-}" ]; then
    read -r -a inputs <<< "$INPUTS"
fi
[ ${#inputs[@]} -gt 0 ] || die "no input: give files, folders, glob patterns or list files (or INPUTS=...)"

expand() {  # one input -> the .root files it names, one per line (unfinished *.tmp writes never)
    local item="$1" line
    if [ -d "$item" ]; then
        find "$item" -type f -name '*.root' | LC_ALL=C sort
    elif [ -f "$item" ] && [[ "$item" == *.root ]]; then
        echo "$item"
    elif [ -f "$item" ]; then
        while IFS= read -r line || [ -n "$line" ]; do
            line="${line%%#*}"
            line="${line#"${line%%[![:space:]]*}"}"
            line="${line%"${line##*[![:space:]]}"}"
            [ -z "$line" ] || expand "$line"
        done < "$item"
    elif compgen -G "$item" > /dev/null; then
        while IFS= read -r line; do
            if [ -d "$line" ] || [[ "$line" == *.root ]]; then expand "$line"; fi
        done < <(compgen -G "$item" | LC_ALL=C sort)
    else
        die "input $item: no such file, folder or matching pattern"
    fi
}

files=()
for item in "${inputs[@]}"; do
    listed="$(expand "$item")" || exit 2
    [ -n "$listed" ] || die "input $item: holds no .root file"
    while IFS= read -r path; do files+=("$path"); done <<< "$listed"
done
mapfile -t files < <(printf '%s\n' "${files[@]}" | awk '!seen[$0]++')  # same file named twice: once

duplicate="$(printf '%s\n' "${files[@]}" | awk -F/ '{ if (seen[$NF]) { print seen[$NF] " and " $0; exit } seen[$NF] = $0 }')"
[ -z "$duplicate" ] || die "$duplicate have the same base name: both would write $OUT/$(basename "${duplicate##* and }"); reconstruct them with different OUT folders"

# ---- this task's share ----------------------------------------------------------------------------
count="${SLURM_ARRAY_TASK_COUNT:-1}"
if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    task=$(( (SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0}) / ${SLURM_ARRAY_TASK_STEP:-1} ))
else
    task=0
fi
[ "$count" -ge 1 ] && [ "$task" -ge 0 ] && [ "$task" -lt "$count" ] \
    || die "array task index $task is outside 0..$((count - 1)) (SLURM_ARRAY_TASK_ID=${SLURM_ARRAY_TASK_ID:-}, SLURM_ARRAY_TASK_COUNT=$count)"
mine=()
for i in "${!files[@]}"; do
    if [ $(( i % count )) -eq "$task" ]; then mine+=("${files[$i]}"); fi
done
echo "reconstruct.sh: task $task of $count: ${#mine[@]} of ${#files[@]} file(s) -> $OUT" >&2
if [ ${#mine[@]} -eq 0 ]; then
    exit 0
fi

if [ -n "${RECONSTRUCT:-}" ]; then
    read -r -a command <<< "$RECONSTRUCT"
else
    command=("$PYTHON" "$REPO/reconstruct.py")
fi
exec "${command[@]}" "${mine[@]}" --out "$OUT" ${flags[@]+"${flags[@]}"}
