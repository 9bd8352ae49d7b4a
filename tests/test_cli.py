"""The command line, end to end: train, resume, evaluate, and what lands in the workdir."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_CONV, TINY_CROP, TINY_FC, TINY_RESIZE, VISIBLE_INIT

from alexnet_jax.common import host_memory

REPO = Path(__file__).resolve().parents[1]


def run_cli(workdir, *overrides, config="configs/default.py", devices=8, mode="train"):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "alexnet_jax.main", f"--config={config}",
               f"--workdir={workdir}", f"--mode={mode}", *overrides]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def tiny_overrides(tree, data_dir, epochs=1):
    return ["--config.data.name=folder", f"--config.data.path={tree}",
            f"--config.data.data_dir={data_dir}", f"--config.data.crop_size={TINY_CROP}",
            f"--config.data.resize_size={TINY_RESIZE}", "--config.data.prepared=none",
            f"--config.model.conv_widths={TINY_CONV}", f"--config.model.fc_widths={TINY_FC}",
            "--config.train.batch_size=8", "--config.train.eval_batch_size=8",
            f"--config.train.num_epochs={epochs}", "--config.train.log_every_steps=2"]


def records(workdir, name="metrics.jsonl"):
    return [json.loads(line) for line in (Path(workdir) / name).read_text().splitlines()]


def tensorboard_tags(workdir):
    """The scalar and image tags in a workdir's TensorBoard event files."""
    import tensorflow as tf  # noqa: PLC0415

    scalars, images = set(), set()
    for path in Path(workdir).glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                kind = value.metadata.plugin_data.plugin_name
                (images if kind == "images" else scalars).add(value.tag)
    return {"scalars": scalars, "images": images}


def evaluation_values(lines, step):
    """(crops, top1_error, loss) of each evaluation at `step` in metrics or eval results."""
    return [(r["crops"], r["top1_error"], r["loss"]) for r in lines
            if r.get("split") == "val" and r["step"] == step]


@pytest.mark.slow
def test_train_resume_and_evaluate(image_tree, tmp_path):
    workdir, data_dir = tmp_path / "run", tmp_path / "tfds"
    first = run_cli(workdir, *tiny_overrides(image_tree, data_dir, epochs=1), *VISIBLE_INIT)
    assert first.returncode == 0, first.stderr[-3000:]
    # every long phase says what it does: preparing the tree, statistics, evaluating
    assert f"preparing the ImageFolder tree {image_tree} (44 train + 15 val image files, 5 " \
        "classes)" in first.stderr
    assert "Downloading and preparing dataset" not in first.stdout + first.stderr
    assert "skipped unreadable image " + str(image_tree / "train/dog/broken.jpg") in first.stderr
    for phase in ("preparing train/", "statistics of folder", "evaluating val (centre crop)",
                  "evaluating val (10 views)"):
        assert phase in first.stderr, phase
    lines = records(workdir)
    facts = lines[0]
    assert facts["num_devices"] == 8 and facts["mesh"] == {"data": 4, "model": 2}
    assert facts["process_count"] == 1 and facts["num_params"] > 0
    assert facts["skipped_images"] == {"train": 1, "val": 0}
    # the trainer restarted itself with glibc's huge pages where this host gains from them
    assert facts["platform"]["host_memory"]["glibc_tunables"] == (
        host_memory.tunables_for_training(os.environ) or os.environ.get("GLIBC_TUNABLES"))
    train_lines = [r for r in lines if r.get("split") == "train"]
    assert [r["step"] for r in train_lines] == [2, 4, 5]  # 43 images // 8 = 5 steps per epoch
    for r in train_lines:
        assert {"step", "epoch", "loss", "learning_rate", "images_per_sec"} <= set(r)
        assert r["learning_rate"] == 0.01 and r["images_per_sec"] > 0
    evals = [r for r in lines if r.get("split") == "val"]  # the end: centre crop and 10 views
    assert [(r["step"], r["crops"], r["count"]) for r in evals] == [(5, 1, 15), (5, 10, 15)]
    for r in evals:
        assert 0.0 <= r["top5_error"] <= r["top1_error"] <= 1.0
        assert r["top1_error"] * 15 == pytest.approx(round(r["top1_error"] * 15))  # whole images
    assert 0.0 <= train_lines[-1]["data_wait_fraction"] <= 1.0
    assert 0.1 < train_lines[-1]["host_peak_resident_gb"] < 64
    assert json.loads((workdir / "config.json").read_text())["data"]["name"] == "folder"
    tags = tensorboard_tags(workdir)
    assert {"train/loss", "train/learning_rate", "train/images_per_sec", "val_1crop/top1_error",
            "val_1crop/top5_error", "val_10crop/top1_error"} <= tags["scalars"]
    assert "conv1_filters" in tags["images"]
    assert (workdir / "learning_curves.png").exists() and (workdir / "conv1_filters.png").exists()
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) \
        == [5]

    second = run_cli(workdir, *tiny_overrides(image_tree, data_dir, epochs=2), *VISIBLE_INIT)
    assert second.returncode == 0, second.stderr[-3000:]
    lines = records(workdir)
    starts = [r for r in lines if r.get("event") == "run_start"]
    assert [r["start_step"] for r in starts] == [0, 5]  # resumed, not restarted
    assert [r["step"] for r in lines if r.get("split") == "train"][-2:] == [8, 10]
    assert (workdir / "checkpoints" / "10").is_dir()

    training_record = {p.name: p.read_bytes() for p in workdir.iterdir()
                       if p.name == "metrics.jsonl" or p.name.startswith("events.out")}
    evaluation = run_cli(workdir, *tiny_overrides(image_tree, data_dir, epochs=2),
                         *VISIBLE_INIT, mode="eval")
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    final = records(workdir, "eval_results.jsonl")
    assert [(r["step"], r["crops"], r["count"]) for r in final] == [(10, 1, 15), (10, 10, 15)]
    # the checkpoint's parameters, evaluated as the training evaluated them at its end
    trained = evaluation_values(lines, 10)
    assert len(trained) == 2 and trained != evaluation_values(lines, 5)
    np.testing.assert_allclose(np.array(evaluation_values(final, 10)), np.array(trained),
                               rtol=1e-5)
    earlier = run_cli(workdir, *tiny_overrides(image_tree, data_dir, epochs=2), *VISIBLE_INIT,
                      "--step=5", mode="eval")
    assert earlier.returncode == 0, earlier.stderr[-3000:]
    final = records(workdir, "eval_results.jsonl")
    assert [(r["step"], r["crops"]) for r in final[2:]] == [(5, 1), (5, 10)]
    np.testing.assert_allclose(np.array(evaluation_values(final, 5)),
                               np.array(evaluation_values(lines, 5)), rtol=1e-5)
    assert {p.name: p.read_bytes() for p in workdir.iterdir()  # the training's record as it was
            if p.name == "metrics.jsonl" or p.name.startswith("events.out")} == training_record
    check_plain_orbax_loading(workdir, image_tree, data_dir)


def check_plain_orbax_loading(workdir, tree, data_dir):
    """Plain Orbax calls load the parameters, and the network runs on them."""
    import numpy as np  # noqa: PLC0415
    import orbax.checkpoint as ocp  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415
    from helpers import tiny_config  # noqa: PLC0415

    from alexnet_jax.model import build  # noqa: PLC0415

    manager = ocp.CheckpointManager(workdir / "checkpoints")
    assert manager.latest_step() == 10
    params = ocp.StandardCheckpointer().restore(
        workdir / "checkpoints" / str(manager.latest_step()) / "params")
    assert params["conv1"]["kernel"].shape == (2, 11, 11, 3, TINY_CONV[0] // 2)
    config = tiny_config(tree, data_dir)
    mesh = build.build_mesh(config)
    model = build.abstract_model(config, num_classes=5, mesh=mesh)
    graphdef, state = nnx.split(model)
    nnx.replace_by_pure_dict(state, params)
    model = nnx.merge(graphdef, state)
    logits = np.asarray(model(np.zeros((8, TINY_CROP, TINY_CROP, 3), np.float32)))
    assert logits.shape == (8, 5) and np.isfinite(logits).all()
    np.testing.assert_array_equal(np.asarray(model.fc8.bias[...]), params["fc8"]["bias"])


@pytest.mark.slow
def test_four_devices_make_a_two_by_two_mesh(image_tree, tmp_path):
    workdir = tmp_path / "run"
    result = run_cli(workdir, *tiny_overrides(image_tree, tmp_path / "tfds"),
                     "--config.train.num_steps=2", devices=4)
    assert result.returncode == 0, result.stderr[-3000:]
    facts = records(workdir)[0]
    assert facts["num_devices"] == 4 and facts["mesh"] == {"data": 2, "model": 2}


@pytest.mark.slow
def test_paper_config_without_imagenet_stops_at_once_with_instructions(tmp_path):
    result = run_cli(tmp_path / "run", f"--config.data.data_dir={tmp_path / 'tfds'}")
    assert result.returncode != 0
    assert "ILSVRC2012_img_train.tar" in result.stderr
    assert str(tmp_path / "tfds" / "downloads" / "manual") in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # nothing created for a refused run


@pytest.mark.parametrize("override,message", [
    ("--config.model.nonexistent=1", "nonexistent"),
])
def test_unknown_config_key_is_refused(tmp_path, override, message):
    result = run_cli(tmp_path / "run", override)
    assert result.returncode != 0 and message in result.stderr


def error_lines(result):
    """The lines of stderr that are not TensorFlow's or absl's start-up chatter."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_a_missing_config_file_is_one_paragraph_before_any_heavy_import(tmp_path):
    result = run_cli(tmp_path / "run", config="configs/imagenet.py")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = error_lines(result)
    assert "configs/imagenet.py does not exist" in line
    assert "configs/default.py" in line and "configs/imagenette.py" in line
    probe = ("import sys\nfrom alexnet_jax import main\ntry:\n    main.parse_flags(['main', "
             "'--config=configs/imagenet.py', '--workdir=x'])\nexcept SystemExit as e:\n"
             "    print(e.code, 'tensorflow' in sys.modules, 'jax' in sys.modules)\n")
    checked = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
    assert checked.stdout.split() == ["2", "False", "False"]
    assert not (tmp_path / "run").exists()


def test_a_misspelt_key_names_the_argument_and_the_closest_key(tmp_path):
    result = run_cli(tmp_path / "run", "--config.train.batchsize=16")
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert line == ("error: --config.train.batchsize=16: the config has no key "
                    "'train.batchsize'; did you mean --config.train.batch_size?")
    assert "\\" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("arguments,environment,message", [
    (["--config.model.lrn", "False"], {}, "unexpected arguments: False. A flag takes its value "
     "after '='"),
    (["--workdir="], {}, "--workdir=DIR are required (a non-empty DIR)"),
    (["--split=validation", "--mode=features"], {},
     "flag --split=validation: value should be one of <train|val>. python -m alexnet_jax.main "
     "--help lists the flags."),
    ([], {"JAX_NUM_PROCESSES": "abc", "JAX_COORDINATOR_ADDRESS": "localhost:1"},
     "JAX_NUM_PROCESSES='abc' must be an integer"),
])
def test_a_malformed_command_line_is_one_message_and_exit_2(tmp_path, arguments, environment,
                                                            message):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **environment)
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "alexnet_jax.main", f"--config={REPO}/configs/default.py",
               f"--workdir={workdir}", *arguments]
    result = subprocess.run(command, cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not workdir.exists() and not any(tmp_path.iterdir())  # nothing written, not even "."


# Library notices a user of a real command used to see, none of them the user's business.
LIBRARY_NOISE = ("oneDNN custom operations", "cpu_feature_guard", "rebuild TensorFlow",
                 "absl::InitializeLog", "Using custom data configuration",
                 "has no dataset_info.json", "is deprecated. Please change",
                 "Metadata file does not exist", "leaked shared_memory")


@pytest.mark.slow
def test_a_run_its_resume_its_evaluation_and_the_readme_recipe_print_no_library_noise(
        image_tree, tmp_path):
    """Run as a user runs it: no TF_CPP_MIN_LOG_LEVEL or oneDNN setting of their own (the
    suite's own setting is removed), prepared squares, a resume that extends the run, an
    evaluation, and the README's plain-Orbax recipe on its checkpoint. The project's own
    messages stay."""
    from test_loading import readme_loading_recipe  # noqa: PLC0415

    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    workdir = tmp_path / "run"
    overrides = [*tiny_overrides(image_tree, tmp_path / "tfds"),
                 f"--config.data.prepared={TINY_RESIZE}", "--config.train.final_eval_views=(1,)"]

    def run(*extra, mode="train"):
        result = subprocess.run(
            [sys.executable, "-m", "alexnet_jax.main", "--config=configs/default.py",
             f"--workdir={workdir}", f"--mode={mode}", *overrides, *extra],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout + result.stderr

    outputs = [run(), run("--config.train.num_epochs=2"),
               run("--config.train.num_epochs=2", mode="eval"),
               run("--config.train.num_epochs=2")]                  # finished: run again
    recipe = readme_loading_recipe().replace("runs/imagenette/checkpoints",
                                             str(workdir / "checkpoints"))
    loaded = subprocess.run([sys.executable, "-c", recipe], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    outputs.append(loaded.stdout + loaded.stderr)
    for output in outputs:
        assert not [noise for noise in LIBRARY_NOISE if noise in output], output[-3000:]
    assert "preparing the ImageFolder tree" in outputs[0]
    assert "restored the checkpoint" in outputs[1] and "resuming with config changes" in \
        outputs[1]
    assert "validation (centre crop)" in outputs[2]
    # an evaluation and a finished run read a checkpoint; neither resumes anything
    assert "already complete (step 10)" in outputs[3]
    assert not [output for output in outputs[2:] if "resumed from" in output]
