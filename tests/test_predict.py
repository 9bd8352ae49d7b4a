"""Predictions, fc7 features and Figure 4 from a trained run."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import VISIBLE_INIT, make_image_tree, tiny_config
from test_cli import REPO, run_cli, tiny_overrides

from alexnet_jax.common.errors import UserError
from alexnet_jax.common.sharding import single_device_mesh
from alexnet_jax.data import class_names
from alexnet_jax.model import build
from alexnet_jax.prediction import predict
from alexnet_jax.training.checkpoints.checkpointing import load_params

# Eight classes, so that a top 5 is a choice.
CLASSES = ("ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_image_tree(tmp_path_factory.mktemp("tree8"), classes=CLASSES)


@pytest.fixture(scope="module")
def trained(tree, tmp_path_factory):
    """A tiny run of two steps: its workdir and the overrides that describe it."""
    root = tmp_path_factory.mktemp("trained")
    overrides = [*tiny_overrides(tree, root / "tfds"), *VISIBLE_INIT, "--config.train.num_steps=2",
                 "--config.train.final_eval_views=()", "--config.train.checkpoint_every_steps=1",
                 "--config.optimizer.learning_rate=0.001"]
    result = run_cli(root / "run", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run", overrides


def trained_config(tree, workdir):
    """The in-process config of the `trained` run."""
    config = tiny_config(tree, workdir.parent / "tfds")
    with config.unlocked():
        config.model.init_std, config.model.positive_bias = 0.1, 0.1
    return config


def loaded_model(tree, workdir, step):
    """The checkpoint's parameters loaded with plain Orbax into a network built here, on one
    device (not predict's own loading, batching or ranking)."""
    return build.model_with_params(trained_config(tree, workdir), len(CLASSES),
                                   load_params(workdir / "checkpoints" / str(step) / "params"),
                                   single_device_mesh())


def independent_probabilities(workdir, tree, step, views_of_images):
    """Softmax averaged over views, computed independently of predict."""
    model = loaded_model(tree, workdir, step)
    result = []
    for views in views_of_images:
        logits = np.asarray(model(views), np.float64)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        result.append((probs / probs.sum(-1, keepdims=True)).mean(axis=0))
    return result


@pytest.mark.slow
def test_predict_prints_the_top5_of_each_image_and_reports_an_unreadable_one(trained, tree,
                                                                            tmp_path):
    workdir, overrides = trained
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    images = [str(tree / "val" / "ant" / "000.jpg"), str(tmp_path / "broken.jpg"),
              str(tree / "val" / "hen" / "001.jpg")]
    result = run_cli(workdir, *overrides, f"--images={images[0]}", *images[1:], "--views=10",
                     mode="predict")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["path"] for line in lines] == images              # in the order given
    prep = predict.load_trained(trained_config(tree, workdir), workdir).prep
    expected = independent_probabilities(workdir, tree, 2, [
        predict.load_views(Path(images[i]), prep, 10) for i in (0, 2)])
    for line, probs in zip((lines[0], lines[2]), expected):
        order = np.argsort(-probs)[:5]
        assert [name for name, _ in line["top5"]] == [CLASSES[i] for i in order]
        np.testing.assert_allclose([p for _, p in line["top5"]], probs[order], rtol=1e-3)
        assert probs[order[4]] - probs[np.argsort(-probs)[5]] > 1e-4  # a real 5th place
    assert lines[0]["top5"] != lines[2]["top5"]            # the image matters
    assert lines[1]["error"].startswith("corrupt JPEG file") or \
        lines[1]["error"].startswith("truncated JPEG file")
    assert ("1 of 3 images could not be read (the line above says why); the others were "
            "predicted.") in result.stderr
    alone = run_cli(workdir, *overrides, f"--images={images[1]}", mode="predict")
    assert alone.returncode == 2
    assert "1 of 1 image could not be read (the line above says why)." in alone.stderr
    assert "others" not in alone.stderr


@pytest.mark.slow
def test_features_of_a_split_and_their_index(trained, tree, tmp_path):
    workdir, overrides = trained
    output = tmp_path / "features" / "val.npy"
    result = run_cli(workdir, *overrides, "--split=val", f"--output={output}", mode="features")
    assert result.returncode == 0, result.stderr[-2000:]
    vectors = np.load(output)
    assert vectors.shape == (24, 32) and vectors.dtype == np.float32   # fc7 of the tiny net
    assert (vectors >= 0).all()                                          # after the ReLU
    index = [json.loads(line) for line in output.with_suffix(".index.jsonl").read_text()
             .splitlines()]
    assert [row["row"] for row in index] == list(range(24))
    assert {row["path"].split("/")[1] for row in index} == set(CLASSES)
    assert all(row["class"] == row["path"].split("/")[1] for row in index)
    assert sorted(p.name for p in output.parent.iterdir()) == ["val.index.jsonl", "val.npy"]
    # each row is its own image's fc7, from this checkpoint: recomputed independently
    prep = predict.load_trained(trained_config(tree, workdir), workdir).prep
    model = loaded_model(tree, workdir, 2)
    for row in (index[0], index[-1]):
        image = predict.load_views(tree / row["path"], prep, 1)
        np.testing.assert_allclose(vectors[row["row"]], np.asarray(model.features(image))[0],
                                   rtol=1e-4, atol=1e-4 * vectors.max())
    assert np.abs(vectors[0] - vectors[-1]).max() > 1e-2 * vectors.max()
    earlier = tmp_path / "step1.npy"
    result = run_cli(workdir, *overrides, "--split=val", f"--output={earlier}", "--step=1",
                     "--limit=1", mode="features")
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.abs(np.load(earlier)[0] - vectors[0]).max() > 1e-3 * vectors.max()


@pytest.mark.slow
def test_an_unreadable_newest_checkpoint_falls_back_and_another_model_is_refused(
        trained, tree, tmp_path):
    source, overrides = trained
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir)
    for path in (workdir / "checkpoints" / "2" / "params").rglob("*"):
        if path.is_file():
            path.write_bytes(b"")                                # a damaged copy
    image = str(tree / "val" / "ant" / "000.jpg")
    result = run_cli(workdir, *overrides, f"--images={image}", mode="predict")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "checkpoints/2 cannot be restored; trying an older one" in result.stderr
    assert len(json.loads(result.stdout.splitlines()[-1])["top5"]) == 5
    assert (workdir / "checkpoints" / "2").is_dir()             # read only: nothing moved

    result = run_cli(source, *overrides, "--config.model.lrn=False", f"--images={image}",
                     mode="predict")
    assert result.returncode == 2
    assert ("was written by a different model or dataset: model.lrn: checkpoint True, this "
            "config False.") in result.stderr


def test_features_go_to_a_npy_file():
    with pytest.raises(UserError, match="must end in .npy"):
        predict.write_features(None, "features.bin")


@pytest.mark.slow
def test_figure4_is_drawn_from_a_trained_run(trained, tmp_path):
    workdir, overrides = trained
    output = tmp_path / "figure4.png"
    command = [sys.executable, "experiments/figure4.py", "--config=configs/default.py",
               f"--workdir={workdir}", f"--output={output}", "--shown=3", "--queries=2",
               "--neighbours=3", "--stride=2", *overrides]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 validation images, 2 queries against 64 training images" in result.stdout
    assert output.stat().st_size > 20_000


def test_wordnet_ids_get_readable_names():
    names = class_names.readable(("n01440764", "n03888257", "not_a_wnid"))
    assert names == ("tench", "parachute", "not_a_wnid")


@pytest.mark.slow
def test_a_trained_workdir_predicts_from_any_directory_without_its_dataset(trained, tree,
                                                                           tmp_path):
    """alexnet_jax.load_workdir: the run's config, classes and statistics from the workdir
    alone, in a directory outside the repository where only the package is importable (as
    once installed: no `configs`), and with the dataset gone: the same top 5 as
    --mode=predict with the run's config."""
    import os  # noqa: PLC0415

    workdir, overrides = trained
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["data"]["path"] = config["data"]["data_dir"] = str(tmp_path / "no_such_data")
    (copy / "config.json").write_text(json.dumps(config))
    assert (copy / "class_names.json").exists() and (copy / "dataset_stats.npz").exists()
    site = tmp_path / "site"
    site.mkdir()
    (site / "alexnet_jax").symlink_to(REPO / "alexnet_jax")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))
    image = str(tree / "val" / "cat" / "001.jpg")
    script = ("import alexnet_jax, json; run = alexnet_jax.load_workdir(" + repr(str(copy))
              + "); print(json.dumps(run.predict([" + repr(image) + "], views=10)))")
    result = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [found] = json.loads(result.stdout.splitlines()[-1])
    assert subprocess.run([sys.executable, "-c", "import configs"], cwd=elsewhere, env=env,
                          capture_output=True).returncode != 0   # as where it is installed
    expected = run_cli(workdir, *overrides, f"--images={image}", "--views=10", mode="predict")
    assert expected.returncode == 0, expected.stderr[-3000:]
    cli = json.loads(expected.stdout.splitlines()[-1])
    assert [name for name, _ in found["top5"]] == [name for name, _ in cli["top5"]]
    np.testing.assert_allclose([p for _, p in found["top5"]], [p for _, p in cli["top5"]],
                               rtol=1e-5)


def test_a_workdir_trained_before_runs_kept_their_classes_loads_from_its_dataset(trained,
                                                                                 tree,
                                                                                 tmp_path):
    """An older workdir: no class_names.json or dataset_stats.npz, and a config.json without
    the keys added since; its classes and statistics come from the dataset its config names."""
    workdir, _ = trained
    old = tmp_path / "old_run"
    shutil.copytree(workdir, old)
    (old / "class_names.json").unlink()
    (old / "dataset_stats.npz").unlink()
    config = json.loads((old / "config.json").read_text())
    del config["data"]["file_format"], config["data"]["read_workers"]
    (old / "config.json").write_text(json.dumps(config))
    image = str(tree / "val" / "cat" / "001.jpg")
    [found] = predict.load_workdir(old).predict([image])
    [expected] = predict.load_workdir(workdir).predict([image])
    assert found["top5"] == expected["top5"]
