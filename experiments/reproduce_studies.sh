#!/usr/bin/env bash
# The paper's experiments on this project's CPU budget, one study after another (README
# "Results"). Resumable: run it again after an interruption and it continues where it stopped.
# About 13 hours on 2 CPU cores; nice keeps the machine usable meanwhile.
#   experiments/reproduce_studies.sh [DATA_ROOT]      (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
python=${PYTHON:-python}
study() {
    nice -n 19 "$python" experiments/run_study.py --study="configs/studies/$1.py" \
        --dir="runs/studies/$1" --config.data.path="$data/$2"
}
study cifar10_figure1 cifar10
study cifar10_lrn cifar10
study imagenette_ablations imagenette2-224
