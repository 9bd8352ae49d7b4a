"""The Frobenius norm of each layer's kernel and bias in checkpoints, side by side.

Shows how far each layer has moved from its initialisation, for comparing optimizers: LARS
(You et al. 2017) moves each layer by a fixed fraction of its weights' norm per step, SGD by its
gradient, so a layer initialised very small (the CIFAR-10 net's conv1, std 1e-4) grows under SGD
and hardly at all under LARS (docs/results/cifar10_large_batch/layer_norms.md).

    python experiments/layer_norms.py NAME=WORKDIR/checkpoints/STEP/params [NAME=... ...]

Each argument is a label and a checkpoint's params directory; prints a Markdown table with one
row per checkpoint, one column per layer ("kernel / bias").
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from alexnet_jax.training.checkpoints.checkpointing import load_params  # noqa: E402


def layer_norms(params: dict) -> dict[str, tuple[float, float]]:
    """{layer: (kernel norm, bias norm)} of a {layer: {kernel, bias}} tree."""
    return {layer: (float(np.linalg.norm(values["kernel"])),
                    float(np.linalg.norm(values["bias"])))
            for layer, values in params.items()}


def table(rows: dict[str, dict[str, tuple[float, float]]]) -> str:
    """A Markdown table: one row per labelled checkpoint, "kernel / bias" per layer."""
    layers = list(next(iter(rows.values())))
    lines = ["| checkpoint | " + " | ".join(layers) + " |", "|---" * (len(layers) + 1) + "|"]
    for label, norms in rows.items():
        cells = [f"{norms[layer][0]:.3g} / {norms[layer][1]:.3g}" for layer in layers]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or any("=" not in arg for arg in argv):
        print(__doc__, file=sys.stderr)
        return 2
    rows = {}
    for arg in argv:
        label, path = arg.split("=", 1)
        if not (Path(path) / "_METADATA").exists() and not Path(path).is_dir():
            print(f"error: {path} is not a checkpoint's params directory "
                  "(WORKDIR/checkpoints/STEP/params)", file=sys.stderr)
            return 2
        rows[label] = layer_norms(load_params(path))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
