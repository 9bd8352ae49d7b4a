"""Predictions, fc7 features and Figure 4 from a trained run."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from alexnet_jax import predict
from alexnet_jax.data import class_names
from alexnet_jax.errors import UserError
from test_cli import REPO, run_cli, tiny_overrides


@pytest.fixture(scope="module")
def trained(image_tree, tmp_path_factory):
    """A tiny run of two steps: its workdir and the overrides that describe it."""
    root = tmp_path_factory.mktemp("trained")
    overrides = [*tiny_overrides(image_tree, root / "tfds"), "--config.train.num_steps=2",
                 "--config.train.final_eval_views=()", "--config.train.checkpoint_every_steps=1"]
    result = run_cli(root / "run", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run", overrides


def test_predict_prints_the_top5_of_each_image_and_reports_an_unreadable_one(trained, image_tree,
                                                                            tmp_path):
    workdir, overrides = trained
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    images = [str(image_tree / "val" / "ant" / "000.jpg"), str(tmp_path / "broken.jpg"),
              str(image_tree / "val" / "eel" / "001.jpg")]
    result = run_cli(workdir, *overrides, f"--images={images[0]}", *images[1:], "--views=10",
                     mode="predict")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["path"] for line in lines] == images              # in the order given
    for line in (lines[0], lines[2]):
        assert len(line["top5"]) == 5
        assert {name for name, _ in line["top5"]} == {"ant", "bee", "cat", "dog", "eel"}
        assert sum(p for _, p in line["top5"]) == pytest.approx(1.0, abs=1e-4)
    assert lines[1]["error"].startswith("corrupt JPEG file") or \
        lines[1]["error"].startswith("truncated JPEG file")
    assert "1 of 3 images could not be read" in result.stderr


def test_features_of_a_split_and_their_index(trained, tmp_path):
    workdir, overrides = trained
    output = tmp_path / "features" / "val.npy"
    result = run_cli(workdir, *overrides, "--split=val", f"--output={output}", mode="features")
    assert result.returncode == 0, result.stderr[-2000:]
    vectors = np.load(output)
    assert vectors.shape == (15, 32) and vectors.dtype == np.float32   # fc7 of the tiny net
    assert (vectors >= 0).all()                                          # after the ReLU
    index = [json.loads(line) for line in output.with_suffix(".index.jsonl").read_text()
             .splitlines()]
    assert [row["row"] for row in index] == list(range(15))
    assert {row["path"].split("/")[1] for row in index} == {"ant", "bee", "cat", "dog", "eel"}
    assert all(row["class"] == row["path"].split("/")[1] for row in index)
    assert sorted(p.name for p in output.parent.iterdir()) == ["val.index.jsonl", "val.npy"]


def test_an_unreadable_newest_checkpoint_falls_back_and_another_model_is_refused(
        trained, image_tree, tmp_path):
    source, overrides = trained
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir)
    for path in (workdir / "checkpoints" / "2" / "params").rglob("*"):
        if path.is_file():
            path.write_bytes(b"")                                # a damaged copy
    image = str(image_tree / "val" / "ant" / "000.jpg")
    result = run_cli(workdir, *overrides, f"--images={image}", mode="predict")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "checkpoints/2 cannot be restored; trying an older one" in result.stderr
    assert len(json.loads(result.stdout.splitlines()[-1])["top5"]) == 5
    assert (workdir / "checkpoints" / "2").is_dir()             # read only: nothing moved

    result = run_cli(source, *overrides, "--config.model.lrn=False", f"--images={image}",
                     mode="predict")
    assert result.returncode == 2
    assert "was written by another model or dataset than this config describes" in result.stderr


def test_features_go_to_a_npy_file():
    with pytest.raises(UserError, match="must end in .npy"):
        predict.write_features(None, "features.bin")


def test_figure4_is_drawn_from_a_trained_run(trained, tmp_path):
    workdir, overrides = trained
    output = tmp_path / "figure4.png"
    command = [sys.executable, "experiments/figure4.py", "--config=configs/default.py",
               f"--workdir={workdir}", f"--output={output}", "--shown=3", "--queries=2",
               "--neighbours=3", "--stride=2", *overrides]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 validation images, 2 queries against 43 training images" in result.stdout
    assert output.stat().st_size > 20_000


def test_wordnet_ids_get_readable_names():
    names = class_names.readable(("n01440764", "n03888257", "not_a_wnid"))
    assert names == ("tench", "parachute", "not_a_wnid")
