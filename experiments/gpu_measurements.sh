#!/usr/bin/env bash
# Every GPU measurement of the docs/performance.md in one run (about 6 minutes on an
# H200): the step per variant in bfloat16 and float32 at batch 128 and 512 with the per-layer
# table, the whole trainer on synthetic data, and, when PREPARED names a prepared folder of
# real JPEG squares (experiments/prepare_device_sample.sh: imagenet-sample-500 at 256, 19 MB), the whole trainer
# fed from it by every host core (data.name=prepared; no TensorFlow needed anywhere). Figures go
# to $OUT (default: runs/gpu) as JSON and a log.
#   [PREPARED=DIR] experiments/gpu_measurements.sh
# On a machine without ml_collections, tensorflow-datasets or Grain, install the wheels of
# experiments/device_wheels.sh first (see docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/device.txt" || true
variants=split,grouped,lrn_slices,space_to_depth,fast
for dtype in bfloat16 float32; do
    $py experiments/benchmark_step.py --steps 30 --warmup 3 --dtype $dtype --variants $variants \
        --layers --json "$out/step_${dtype}_128.json" 2>&1 | tee -a "$out/log.txt"
    $py experiments/benchmark_step.py --steps 20 --warmup 3 --dtype $dtype --batch 512 \
        --variants split,fast --json "$out/step_${dtype}_512.json" 2>&1 | tee -a "$out/log.txt"
done
# The trainer itself: synthetic uint8 batches made on the host, finished on the device,
# logging, metrics fetched one step late, checkpoints every 100 steps.
$py -m alexnet_jax.main --config=configs/default.py --workdir="$out/trainer_run" \
    --config.data.name=synthetic --config.model.dtype=bfloat16 \
    --config.model.lrn_impl=slices --config.model.conv1_impl=space_to_depth \
    --config.data.synthetic_examples=12800 --config.train.num_steps=400 \
    --config.train.log_every_steps=50 --config.train.checkpoint_every_steps=100 \
    "--config.train.final_eval_views=()" 2>&1 | tail -5 | tee -a "$out/log.txt"
cp "$out/trainer_run/metrics.jsonl" "$out/trainer_metrics.jsonl"
rm -rf "$out/trainer_run"
# The trainer fed from real JPEG squares, decoded on every host core: the 500 training squares
# repeated 32 times (links), so an epoch is 125 steps and every image is decoded each time.
if [ -n "${PREPARED:-}" ]; then
    big=$(mktemp -d)/prepared_x32
    $py experiments/enlarge_prepared.py --source "$PREPARED" --dest "$big" --times 32 \
        | tee -a "$out/log.txt"
    $py -m alexnet_jax.main --config=configs/default.py --workdir="$out/prepared_run" \
        --config.data.name=prepared --config.data.path="$big" --config.model.dtype=bfloat16 \
        --config.train.num_steps=300 --config.train.log_every_steps=25 \
        --config.train.checkpoint_every_steps=1000 "--config.train.final_eval_views=()" \
        2>&1 | tail -5 | tee -a "$out/log.txt"
    cp "$out/prepared_run/metrics.jsonl" "$out/prepared_metrics.jsonl"
    rm -rf "$out/prepared_run" "$big"
fi
