#!/usr/bin/env bash
# Score every shipped model on the held-out sets (20,000 events per generator, seed 999, never used
# in training) with plot_confusion.py --all-events; run folders under runs/eval/.
#   bash models/evaluate_models.sh [name ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=2
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(top_my_generator side_my_generator front_my_generator voxel_my_generator
                                 combined_my_generator top_toyhaystack combined_toyhaystack)
for name in "${names[@]}"; do
    case $name in *_my_generator) data=data/heldout/my_generator ;; *) data=data/heldout/toyhaystack ;; esac
    [ -f "models/$name.keras" ] || { echo "skip $name: no models/$name.keras"; continue; }
    echo "=== $name on $data"
    rm -rf "runs/eval/$name"
    $PY plot_confusion.py --model "models/$name.keras" --data "$data" --all-events --max-gallery 20 \
        --out "runs/eval/$name" --quiet
done
