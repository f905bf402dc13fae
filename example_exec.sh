#!/bin/bash
# Train the top-view track counter on one GPU node with 2 V100s (MirroredStrategy).
# Submit from the repository root:   sbatch example_exec.sh
# A requeued job keeps its job id, hence its run folder, and resumes from the last completed epoch.
# To resume from a new submission, name the folder:  sbatch --export=ALL,OUT=runs/count-top-1234 example_exec.sh
#
#SBATCH --job-name=snemo-count-top
#SBATCH --partition=gpu
#SBATCH --gres=gpu:v100:2
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH -t 04:00:00
#SBATCH --requeue
#SBATCH --output=runs/slurm-%x-%j.out
#
# Going multi-node (one process per node, each with its 2 GPUs, synchronous data parallelism):
#   #SBATCH --nodes=2
#   #SBATCH --ntasks-per-node=1
#   srun python number_of_tracks_classification.py --MultiWorkerMirroredStrategy ... (same flags, no device list)
# The script then builds tf.distribute.MultiWorkerMirroredStrategy with a SlurmClusterResolver,
# which reads the node list and task ids from Slurm (SLURM_JOB_ID, SLURM_NTASKS, ...); each worker
# reads its own shard of the data, --batch-size stays the global batch, and only worker 0 (the
# chief) writes the run folder, which must be on a shared file system. Outside Slurm, set TF_CONFIG
# on every process instead. With one task per GPU (--ntasks-per-node=2 --gres=gpu:v100:2), also
# export CUDA_VISIBLE_DEVICES per task (e.g. srun --gpus-per-task=1).

set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")}"
mkdir -p runs

# Environment: the repository's virtual environment (make setup), plus `pip install -r requirements-gpu.txt` (CUDA wheels) on GPU nodes.
# module load cuda/12   # if your site provides CUDA as a module instead of the pip wheels
source .venv/bin/activate
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=2

OUT="${OUT:-runs/count-top-${SLURM_JOB_ID:-local}}"
python number_of_tracks_classification.py \
    --view top \
    --data data/my_generator \
    --out "$OUT" \
    --epochs 40 \
    --batch-size 512 \
    --learning-rate 2e-3 \
    --lr-schedule cosine \
    --streaming \
    --MirroredStrategy /gpu:0 /gpu:1
