#!/usr/bin/env bash
# The real-JPEG input of experiments/gpu_measurements.sh: imagenet-sample-500 prepared once as
# 256 x 256 JPEG squares (the default config's storage, about 11 MB) in ArrayRecord files into
# .device_data/sample256, small enough to travel with a device call (carry .device_data; run the
# measurements with PREPARED=.device_data/sample256). Needs TensorFlow here; the device machine
# then needs none, but tensorflow-datasets, array-record, grain and simplejpeg (carry their
# wheels, as ml_collections', when it lacks them).
# The sample has one image per class and disjoint train/val classes, so its 500 images are all
# trained on (train/ holds every class) and val/ repeats the 400 of the original train/.
#   experiments/prepare_device_sample.sh [SAMPLE_DIR]   (default ../shared/data/imagenet-sample-500)
set -euo pipefail
cd "$(dirname "$0")/.."
sample=$(realpath "${1:-../shared/data/imagenet-sample-500}")
work=$(mktemp -d)
mkdir -p "$work/tree/train"
for class in "$sample"/train/* "$sample"/val/*; do ln -s "$class" "$work/tree/train/"; done
ln -s "$sample/train" "$work/tree/val"
${PYTHON:-python} -m alexnet_jax.main --config=configs/default.py --mode=prepare \
    --config.data.name=folder --config.data.path="$work/tree" --config.data.data_dir="$work/tfds" \
    --config.data.file_format=array_record
rm -rf .device_data/sample256
mkdir -p .device_data
cp -r "$work"/tfds/alexnet_prepared/*-array_record/*/ .device_data/sample256
rm -rf "$work"
du -sh .device_data/sample256
