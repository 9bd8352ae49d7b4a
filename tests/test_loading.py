"""Loading saved parameters back into a network, and README's plain-Orbax recipe."""

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from alexnet_jax.common import sharding
from alexnet_jax.model import build
from alexnet_jax.training.checkpoints.checkpointing import load_params


def saved_tiny_model(config, directory):
    """A tiny model on a 2x2 (data x model) mesh, its parameters saved with plain Orbax; at an
    initialisation under which its outputs depend on its input and parameters (at the paper's,
    a tiny network's logits hardly do, and two models could not be told apart)."""
    with config.unlocked():
        config.model.init_std, config.model.positive_bias = 0.1, 0.1
    mesh = sharding.make_mesh(2, config.model.columns, jax.devices()[:4])
    model = build.build_model(config, 5, mesh)
    params = nnx.state(model, nnx.Param).to_pure_dict()
    ocp.PyTreeCheckpointer().save(directory / "params", params)
    return model, params


@pytest.mark.slow
def test_load_params_with_a_relative_path_then_run_on_another_mesh(config, tmp_path,
                                                                   monkeypatch):
    original, params = saved_tiny_model(config, tmp_path / "ckpt")  # on 4 devices
    monkeypatch.chdir(tmp_path)
    loaded = load_params("ckpt/params")  # relative, as a user would type it
    assert isinstance(loaded["conv1"]["kernel"], np.ndarray)
    np.testing.assert_array_equal(loaded["fc8"]["kernel"], np.asarray(params["fc8"]["kernel"]))
    model = build.model_with_params(config, 5, loaded, sharding.single_device_mesh())
    images = np.random.RandomState(0).normal(0, 50, (4, 67, 67, 3)).astype(np.float32)
    want = np.asarray(original(images))
    tolerance = 1e-5 * np.abs(want).max()
    np.testing.assert_allclose(np.asarray(model(images)), want, rtol=1e-5, atol=tolerance)
    # another model (another seed) is told apart, and so is another input
    with config.unlocked():
        config.seed = 1
    other = build.build_model(config, 5, sharding.single_device_mesh())
    assert np.abs(np.asarray(other(images)) - want).max() > 100 * tolerance
    assert np.abs(np.asarray(model(images[::-1])) - want).max() > 100 * tolerance


def test_parameters_of_another_config_are_refused_by_layer_and_shape(config, tmp_path):
    _, params = saved_tiny_model(config, tmp_path / "ckpt")
    loaded = load_params(tmp_path / "ckpt" / "params")
    with config.unlocked():
        config.model.fc_widths = (64, 32)
    with pytest.raises(ValueError, match=r"\['fc6'\]\['bias'\] has shape"):
        build.model_with_params(config, 5, loaded)
    with pytest.raises(ValueError, match="parameters hold layers"):
        build.model_with_params(config, 5, {"conv1": loaded["conv1"]})


def test_layer_norms_reads_checkpoints_and_tabulates_each_layer(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "experiments"))
    from layer_norms import main  # noqa: PLC0415

    params = {"conv1": {"kernel": np.full((2, 2), 0.5, np.float32),       # norm 1
                        "bias": np.array([3.0, 4.0], np.float32)},         # norm 5
              "fc8": {"kernel": np.zeros((3, 1), np.float32), "bias": np.ones(4, np.float32)}}
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "7" / "params", params)
    checkpointer.wait_until_finished()
    assert main([f"step 7={tmp_path / '7' / 'params'}"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "| checkpoint | conv1 | fc8 |", "|---|---|---|", "| step 7 | 1 / 5 | 0 / 2 |"]
    assert main([f"gone={tmp_path / 'missing'}"]) == 2


def readme_loading_recipe() -> str:
    """The Python block of the README's "Loading a checkpoint" section."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Loading a checkpoint", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_loading_recipe_reads_the_newest_saved_checkpoint(config, tmp_path,
                                                                     monkeypatch):
    """Steps 3 and 12 (the newest: a name compared as text would take 3), beside a
    checkpoint Orbax has not finished writing."""
    _, params = saved_tiny_model(config, tmp_path / "checkpoints" / "12")  # on 4 devices
    older = jax.tree.map(lambda array: np.asarray(array) + 1, params)
    ocp.PyTreeCheckpointer().save(tmp_path / "checkpoints" / "3" / "params", older)
    (tmp_path / "checkpoints" / "15.orbax-checkpoint-tmp-1").mkdir()
    recipe = readme_loading_recipe()
    assert '"runs/imagenette/checkpoints"' in recipe
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(recipe.replace("runs/imagenette/checkpoints", "checkpoints"), namespace)  # noqa: S102
    assert namespace["step"] == 12
    loaded = namespace["params"]
    assert isinstance(loaded["conv1"]["kernel"], np.ndarray)
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        np.testing.assert_array_equal(got, np.asarray(want))
