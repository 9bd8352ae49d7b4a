"""The training loop in process: reproducibility, full augmentation, resumption."""

import numpy as np

from alexnet_jax import train
from alexnet_jax.metrics_writer import read_records


def train_losses(config, workdir):
    train.train_and_evaluate(config, workdir)
    return [r["loss"] for r in read_records(workdir) if r.get("split") == "train"]


def test_same_seed_same_losses_with_the_full_augmentation(config, tmp_path):
    with config.unlocked():
        config.train.num_steps = 4
        config.train.final_eval_views = ()
        config.data.stats_sample = 0
    assert config.data.mean == "image" and config.data.lighting == "cuda_convnet2"
    first = train_losses(config, tmp_path / "a")
    second = train_losses(config, tmp_path / "b")
    assert len(first) == 4 and first == second  # bit-identical
    with config.unlocked():
        config.seed = 1
    other = train_losses(config, tmp_path / "c")
    assert not np.allclose(other, first)
