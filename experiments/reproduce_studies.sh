#!/usr/bin/env bash
# The paper's experiments on this project's CPU budget (README "Results", docs/studies.md), round by round: the
# first seed of every arm of every study, then the second, then the third, so that the studies
# are comparisons as early as possible. Every finished run is recorded in RECORDS/<study>/
# (default docs/results: commit it) and never runs again; run the script again after an
# interruption, in this or a later session, and it continues where the records stop.
# About 26 hours on 2 CPU cores in all (imagenette128 10, cifar10_lrn 5.5, cifar10_figure1 7:
# its sweep 1.1, ReLU 0.5 a seed, tanh about 1.3; cifar10_large_batch 3); nice keeps the machine
# usable meanwhile.
#   experiments/reproduce_studies.sh [DATA_ROOT]      (default ../shared/data)
# Environment: RECORDS (default docs/results), RUNS (default runs/studies), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
python=${PYTHON:-python}
records=${RECORDS:-docs/results}
runs=${RUNS:-runs/studies}
study() {  # study round data [--arms=A,B]
    nice -n 19 "$python" experiments/run_study.py --study="configs/studies/$1.py" \
        --dir="$runs/$1" --record="$records/$1" --rounds="$2" --config.data.path="$data/$3" \
        "${@:4}"
}
for round in 1 2 3; do
    # Round 3 gives the 128-pixel baseline its third seed first: the other arms' third seeds
    # come last, after every study has the seeds the README's verdicts need.
    arms=()
    if [ "$round" = 3 ]; then arms=(--arms=baseline); fi
    study imagenette128_ablations "$round" imagenette2-224 "${arms[@]}"
    study cifar10_lrn "$round" cifar10
    study cifar10_figure1 "$round" cifar10
    if [ "$round" = 1 ]; then study cifar10_large_batch 1 cifar10; fi
done
study imagenette128_ablations 3 imagenette2-224
