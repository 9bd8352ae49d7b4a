#!/usr/bin/env bash
# The Python 3.12 x86-64 wheels that the GPU machine lacks for experiments/gpu_measurements.sh
# (it has JAX, flax, optax and Orbax, but no ml_collections, tensorflow-datasets or Grain),
# downloaded into .whl/ (ignored by git; carry `.whl` with the device call), with protobuf in
# .whl/pb/ for a machine whose protobuf is older than tensorflow-metadata's 6.31. Versions:
# requirements.txt's, and those its packages installed here. promise has no wheel on PyPI, so
# one is built.
#   experiments/device_wheels.sh                      (here, where PyPI is reachable)
# then on the device machine, before the measurements:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
cd "$(dirname "$0")/.."
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
download() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" "$@"
}
pinned() {  # NAME==VERSION as requirements.txt pins it, so the two cannot drift apart
    grep -E "^$1==" requirements.txt || { echo "requirements.txt pins no $1" >&2; exit 1; }
}
project=()
for name in ml-collections tensorflow-datasets grain; do project+=("$(pinned "$name")"); done
rm -rf .whl
mkdir -p .whl/pb
download -d .whl "${project[@]}" tensorflow-metadata==1.21.0 \
    array-record==0.8.6 simplejpeg==1.9.0 dm-tree==0.1.10 immutabledict==4.3.1 \
    toml==0.10.2 termcolor==3.3.0 simple-parsing==0.1.9 docstring-parser==0.18.0 \
    googleapis-common-protos==1.76.0 portpicker==1.6.0 etils==1.15.0 importlib_resources==7.1.0
download -d .whl/pb "protobuf>=6.31.1,<7"
python3 -m pip wheel -q --no-deps promise==2.3 -w .whl
du -sh .whl
