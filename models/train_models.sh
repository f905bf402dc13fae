#!/usr/bin/env bash
# Train every shipped model with the repository's own scripts, in order (later models need earlier
# ones), on 2 CPU cores. Training data: 1M events per generator, seed 100; held-out test data:
# 20,000 events per generator, seed 999 (never used in training). Each run folder under
# runs/models/ keeps history, metrics, plots and checkpoints; rerunning resumes.
#   nohup bash models/train_models.sh > runs/models/train_models.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=2
R=runs/models
mkdir -p "$R"

[ -d data/train/my_generator ] || $PY my_generator/my_generator.py --events 25000 --files 10 --seed 100 --out data/train/my_generator --quiet
[ -d data/heldout/my_generator ] || $PY my_generator/my_generator.py --events 5000 --files 1 --seed 999 --out data/heldout/my_generator --quiet
[ -d data/train/toyhaystack ] || $PY Generator/toyhaystack.py --events 25000 --files 10 --seed 100 --out data/train/toyhaystack --quiet
[ -d data/heldout/toyhaystack ] || $PY Generator/toyhaystack.py --events 5000 --files 1 --seed 999 --out data/heldout/toyhaystack --quiet

step() {  # step NAME COMMAND...: run once (resumes), then ship the best model
    local name=$1; shift
    echo "=== $name $(date -u +%H:%M:%S): $*"
    /usr/bin/time -f "$name wall %e s" "$@" --out "$R/$name" --quiet
    cp "$R/$name/model.keras" "models/$name.keras"
}

MG=data/train/my_generator
TH=data/train/toyhaystack
step top_my_generator   $PY number_of_tracks_classification.py --view top   --data $MG --epochs 6 --steps-per-epoch 800 --batch-size 256 --learning-rate 2e-3 --lr-schedule cosine
step side_my_generator  $PY number_of_tracks_classification.py --view side  --data $MG --epochs 10 --steps-per-epoch 500 --batch-size 256 --learning-rate 2e-3 --lr-schedule cosine
# The front counter was trained in stages, each a resume of the same run folder with more epochs
# (warm restarts of the cosine schedule); on a rerun a finished stage only re-scores the model.
FRONT="$PY number_of_tracks_classification.py --view front --data $MG --steps-per-epoch 500 --batch-size 256 --learning-rate 2e-3 --lr-schedule cosine"
step front_my_generator $FRONT --epochs 3
step front_my_generator $FRONT --epochs 6
step front_my_generator $FRONT --epochs 14
step voxel_my_generator $PY number_of_tracks_classification3D.py --data $MG --epochs 2 --steps-per-epoch 200 --batch-size 128 --learning-rate 2e-3 --lr-schedule cosine
step top_toyhaystack    $PY number_of_tracks_classification.py --view top   --data $TH --epochs 3 --steps-per-epoch 500 --batch-size 256 --learning-rate 2e-3 --lr-schedule cosine
step combined_my_generator $PY combined.py --data $MG --top models/top_my_generator.keras --side models/side_my_generator.keras --front models/front_my_generator.keras --epochs 1 --finetune-epochs 1 --steps-per-epoch 300 --batch-size 256
# toyhaystack combined: its own top model, the my_generator side and front branches, fine-tuned on toyhaystack events
step combined_toyhaystack $PY combined.py --data $TH --top models/top_toyhaystack.keras --side models/side_my_generator.keras --front models/front_my_generator.keras --epochs 1 --finetune-epochs 1 --steps-per-epoch 300 --batch-size 256
echo "=== done $(date -u +%H:%M:%S)"
