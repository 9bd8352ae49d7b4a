"""The per-record costs of the TensorFlow-free reader (alexnet_jax/data/prepared_folder.py), in
CPU-milliseconds: reading a record of a prepared ArrayRecord folder through tensorflow-datasets'
data source (its own Python decoding) or its ArrayRecord source with tfds' Example proto (the
reader's way), and decoding a JPEG square with Pillow, simplejpeg's accurate IDCT or its fast
one (the reader's; tf.data's pixels exactly). No TensorFlow is imported.

    python experiments/benchmark_decoding.py --folder <data_dir>/alexnet_prepared/<...>-array_record/1.1.0
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def cpu_ms(work, items, repeats: int = 3) -> float:
    """The least of `repeats` passes: CPU-milliseconds per item of work(item)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for item in items:
            work(item)
        best = min(best, time.process_time() - start)
    return 1000 * best / len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", required=True, help="a prepared ArrayRecord folder (jpeg)")
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import simplejpeg  # noqa: PLC0415
    import tensorflow_datasets as tfds  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    from alexnet_jax.common import provenance  # noqa: PLC0415
    from alexnet_jax.data.prepared_folder import PreparedFolder  # noqa: PLC0415

    builder = tfds.builder_from_directory(args.folder)
    count = min(args.records, builder.info.splits["train"].num_examples)
    indices = list(np.random.default_rng(0).permutation(count))
    tfds_source = builder.as_data_source(
        "train", decoders={"image": tfds.decode.SkipDecoding()})
    folder = PreparedFolder(args.folder, builder.info.features["image"].shape[0], 0, 0)
    folder.record("train", 0)  # opens its source
    squares = [folder.record("train", int(i))[0] for i in indices]

    def pillow(data):
        with Image.open(io.BytesIO(data)) as picture:
            picture.load()
            return np.asarray(picture)

    figures = {
        "read: tfds data source (its decoding)": cpu_ms(lambda i: tfds_source[int(i)],
                                                        indices),
        "read: ArrayRecord + Example proto (the reader)": cpu_ms(
            lambda i: folder.record("train", int(i)), indices),
        "decode: Pillow (accurate IDCT)": cpu_ms(pillow, squares),
        "decode: simplejpeg, accurate IDCT": cpu_ms(
            lambda d: simplejpeg.decode_jpeg(d, colorspace="RGB"), squares),
        "decode: simplejpeg, fast IDCT (the reader)": cpu_ms(
            lambda d: simplejpeg.decode_jpeg(d, colorspace="RGB", fastdct=True), squares),
    }
    for name, value in figures.items():
        print(f"  {name:48s} {value:.3f} CPU-ms a record")
    if args.json:
        args.json.write_text(json.dumps({"folder": str(args.folder), "records": count,
                                         "cpu_ms": figures,
                                         "provenance": provenance.provenance()}, indent=1))


if __name__ == "__main__":
    main()
