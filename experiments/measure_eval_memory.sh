#!/usr/bin/env bash
# Peak resident memory of --mode=eval, the centre crop against the paper's 10 views, with the
# default evaluation batch (128) and the full network at 224 (configs/imagenette.py), measured
# with /usr/bin/time -v (Debian package `time`). Trains one step first to have a checkpoint.
#   experiments/measure_eval_memory.sh TREE [WORKDIR]
# TREE: an ImageFolder tree (a few hundred images suffice: the peak depends on the batch).
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$1
workdir=${2:-runs/eval_memory}
common=(--config=configs/imagenette.py --config.data.name=folder "--config.data.path=$tree"
        "--config.data.data_dir=$workdir/tfds" --config.data.stats_sample=0)
rm -rf "$workdir/run"; mkdir -p "$workdir"
python -m alexnet_jax.main "${common[@]}" --workdir="$workdir/run" --config.train.num_steps=1 \
    "--config.train.final_eval_views=()" > "$workdir/train.log" 2>&1
for views in 1 10; do
    /usr/bin/time -v python -m alexnet_jax.main "${common[@]}" --workdir="$workdir/run" \
        --mode=eval "--config.train.final_eval_views=($views,)" > "$workdir/eval$views.log" 2>&1
    echo "views=$views peak_rss_kB=$(grep 'Maximum resident' "$workdir/eval$views.log" \
        | awk '{print $NF}') wall=$(grep 'Elapsed (wall' "$workdir/eval$views.log" \
        | awk '{print $NF}')"
done
