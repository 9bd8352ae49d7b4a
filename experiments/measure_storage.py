"""How to store the prepared 256 x 256 squares: file size, decode time and fidelity per format.

For each training image of an ImageFolder tree: the paper's float square (shorter side 256,
central crop), then for raw uint8 pixels and JPEG at several qualities: bytes per image, the
time to decode the whole square and to decode only a random 224 x 224 window
(tf.image.decode_and_crop_jpeg, what training does), and the mean absolute difference to the
float square (0-255 levels). JPEG with full-resolution colour (4:4:4) and with the colour
planes halved (`-420`, chroma subsampling). One thread, eager TensorFlow ops (their dispatch
adds about 0.1 ms to each figure), medians over the images.

Run:
    python experiments/measure_storage.py --path ../shared/data/imagenet-sample-500
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from alexnet_jax.data import preprocess  # noqa: E402
from alexnet_jax.data.file_survey import survey  # noqa: E402
from alexnet_jax.data.folder_builder import IMAGE_SUFFIXES  # noqa: E402


def timed(function, repeats: int = 5) -> float:
    function()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", default="../shared/data/imagenet-sample-500")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--qualities", default="75,85,90,95")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    files = sorted(f for f in (Path(args.path) / "train").rglob("*")
                   if f.name.lower().endswith(IMAGE_SUFFIXES))[:args.images]
    print(f"read {survey(Path(args.path) / 'train').describe()}; using {len(files)}", flush=True)
    formats = ["raw"] + [f"jpeg{q}{chroma}" for q in args.qualities.split(",")
                         for chroma in ("", "-420")]
    rows = {name: {"bytes": [], "decode_s": [], "window_s": [], "mad": []} for name in formats}
    original_decode = []
    rng = np.random.default_rng(0)
    for file in files:
        data = tf.constant(file.read_bytes())
        original_decode.append(timed(lambda: preprocess.paper_square(preprocess.decode(data), 256)))
        square = preprocess.paper_square(preprocess.decode(data), 256)
        pixels = tf.cast(tf.clip_by_value(tf.round(square), 0, 255), tf.uint8)
        top, left = rng.integers(0, 33, 2)
        window = tf.constant([top, left, 224, 224], tf.int32)
        for name in formats:
            if name == "raw":
                stored = pixels.numpy().tobytes()
                raw = tf.constant(stored)
                decoded = pixels
                rows[name]["decode_s"].append(timed(lambda: tf.reshape(
                    tf.io.decode_raw(raw, tf.uint8), [256, 256, 3])))
                rows[name]["window_s"].append(timed(lambda: tf.reshape(
                    tf.io.decode_raw(raw, tf.uint8), [256, 256, 3])[top:top + 224,
                                                                    left:left + 224]))
            else:
                encoded = tf.io.encode_jpeg(pixels, quality=int(name[4:6]),
                                            chroma_downsampling=name.endswith("-420"))
                stored = encoded.numpy()
                decoded = tf.io.decode_jpeg(encoded, channels=3)
                rows[name]["decode_s"].append(timed(lambda: tf.io.decode_jpeg(encoded,
                                                                              channels=3)))
                rows[name]["window_s"].append(timed(lambda: tf.image.decode_and_crop_jpeg(
                    encoded, window, channels=3)))
            rows[name]["bytes"].append(len(stored))
            rows[name]["mad"].append(float(np.abs(decoded.numpy().astype(np.float32)
                                                  - square.numpy()).mean()))
    print(f"original files: decode + resize + central square {1e3 * np.median(original_decode):.2f} "
          "ms per image (median)")
    print("| storage | KiB per image | decode 256 x 256 (ms) | decode a 224 x 224 window (ms) | "
          "mean abs. difference to the float square (levels) |")
    print("|---|---|---|---|---|")
    summary = {"path": args.path, "images": len(files),
               "original_decode_resize_ms": 1e3 * float(np.median(original_decode)), "formats": {}}
    for name, row in rows.items():
        figures = {"kib_per_image": float(np.mean(row["bytes"])) / 1024,
                   "decode_ms": 1e3 * float(np.median(row["decode_s"])),
                   "window_decode_ms": 1e3 * float(np.median(row["window_s"])),
                   "mean_abs_difference": float(np.mean(row["mad"]))}
        summary["formats"][name] = figures
        print(f"| {name} | {figures['kib_per_image']:.1f} | {figures['decode_ms']:.2f} | "
              f"{figures['window_decode_ms']:.2f} | {figures['mean_abs_difference']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
