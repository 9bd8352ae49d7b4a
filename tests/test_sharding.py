"""The two columns on a device mesh: mesh shapes, parameter shardings, the collectives of the
compiled training step, and equality with a single device."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TINY_CONV, TINY_CROP, TINY_FC
from jax.sharding import PartitionSpec as P

from alexnet_jax.common import sharding
from alexnet_jax.common.errors import UserError
from alexnet_jax.model.alexnet import AlexNet
from alexnet_jax.training import state, steps

TINY = dict(num_classes=10, input_size=TINY_CROP, conv_widths=TINY_CONV, fc_widths=TINY_FC)
BATCH = 8


def model_on(mesh, **overrides):
    with jax.set_mesh(mesh):
        return nnx.jit(lambda: AlexNet(**{**TINY, **overrides}, mesh=mesh, rngs=nnx.Rngs(0)))()


def mesh_of(data, model):
    return jax.make_mesh((data, model), ("data", "model"), devices=jax.devices()[:data * model])


def batch(seed=0):
    rng = np.random.RandomState(seed)
    return (rng.uniform(-100, 100, (BATCH, TINY_CROP, TINY_CROP, 3)).astype(np.float32),
            rng.randint(0, 10, BATCH).astype(np.int32))


@pytest.mark.parametrize("devices,columns,requested,expected", [
    (1, 2, -1, (1, 1)), (2, 2, -1, (1, 2)), (8, 2, -1, (4, 2)), (8, 1, -1, (8, 1)),
    (8, 2, 1, (8, 1)), (4, 2, 2, (2, 2))])
def test_mesh_shapes(devices, columns, requested, expected):
    mesh = sharding.make_mesh(requested, columns, jax.devices()[:devices])
    assert (mesh.shape["data"], mesh.shape["model"]) == expected


@pytest.mark.parametrize("devices,columns,requested,message", [
    (8, 1, 2, "does not divide model.columns"), (1, 2, 2, "device count divisible"),
    (3, 2, 2, "device count divisible"), (8, 2, 3, "must be 1 or 2")])
def test_impossible_meshes_are_refused(devices, columns, requested, message):
    with pytest.raises(UserError, match=message):
        sharding.make_mesh(requested, columns, jax.devices()[:devices])


@pytest.mark.slow
def test_parameters_are_born_sharded_by_column():
    mesh = mesh_of(4, 2)
    model = model_on(mesh)
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"):
        for leaf in (getattr(model, name).kernel[...], getattr(model, name).bias[...]):
            assert leaf.sharding.spec[0] == "model" and all(a is None for a in leaf.sharding.spec[1:])
            shards = leaf.addressable_shards
            assert len(shards) == 8 and {s.data.shape[0] for s in shards} == {1}
    kernel = model.conv2.kernel[...]
    for shard in kernel.addressable_shards:  # the device at mesh position (d, m) holds column m
        _, column = np.argwhere(mesh.devices == shard.device)[0]
        np.testing.assert_array_equal(shard.data[0], np.asarray(kernel)[column])
    assert model.fc8.kernel[...].sharding.spec == P("model", None, None)
    assert model.fc8.bias[...].sharding.spec == P(None)  # shared by both columns


def _collectives(hlo_text):
    """(kind, result shape, group size) of every collective that crosses devices."""
    found = []
    for line in hlo_text.splitlines():
        match = re.search(r"= (\(?[a-z0-9\[\],{} /*=.]*?\)?)\s*(all-gather|all-reduce|reduce-scatter|"
                          r"collective-permute|all-to-all)(-start)?\(", line)
        if not match:
            continue
        groups = re.search(r"replica_groups=\{(\{[^}]*\}(?:,\{[^}]*\})*)\}", line)
        group_size = len(groups.group(1).split("},{")[0].strip("{}").split(",")) if groups else 0
        if group_size <= 1:
            continue  # a group of one device communicates nothing
        shapes = re.findall(r"f32\[([0-9,]*)\]", match.group(1))
        found.append((match.group(2), tuple(tuple(int(d) for d in s.split(",") if d)
                                            for s in shapes), group_size))
    return found


def compiled_train_step(mesh):
    model = model_on(mesh)
    graphdef, params = nnx.split(model)
    params = params.to_pure_dict()
    config = build_optimizer_config()
    tx = state.build_optimizer(config)
    with jax.set_mesh(mesh):
        opt_state = jax.jit(tx.init)(params)
        step = steps.make_train_step(graphdef, tx, steps.state_shardings(params, opt_state),
                                     jax.random.key(0))
        images, labels = batch()
        images = jax.device_put(images, sharding.sharding_for(mesh, "batch"))
        labels = jax.device_put(labels, sharding.sharding_for(mesh, "batch"))
        return step.lower(params, opt_state, images, labels, jnp.float32(0.01),
                          jnp.int32(0)).compile().as_text()


def build_optimizer_config():
    from configs.default import get_config  # noqa: PLC0415
    return get_config()


@pytest.mark.slow
def test_columns_talk_only_where_the_papers_gpus_did():
    """On a 1 x 2 mesh (one column per device) the training step's only communication is the
    activations entering conv3, fc6, fc7 and fc8 and their gradients (the backward of an
    all-gather is a reduce-scatter)."""
    found = _collectives(compiled_train_step(mesh_of(1, 2)))
    pool2 = (BATCH, 3, 3, TINY_CONV[1])        # both columns' pool2 maps -> conv3
    pool5 = (BATCH, 1, 1, TINY_CONV[4])        # both columns' pool5 maps -> fc6
    fc6 = (BATCH, TINY_FC[0])                  # both columns' fc6 units -> fc7
    logits = (BATCH, 10)                       # the columns' partial logits summed -> fc8
    gathers = sorted(shape[0] for kind, shape, _ in found if kind == "all-gather")
    assert gathers == sorted([pool2, pool5, fc6])
    scatters = sorted(shape[0] for kind, shape, _ in found if kind == "reduce-scatter")
    half = lambda s: s[:-1] + (s[-1] // 2,)  # noqa: E731
    assert scatters == sorted([half(pool2), half(pool5), half(fc6)])
    reduces = [shape for kind, shape, _ in found if kind == "all-reduce"]
    assert reduces == [(logits,)]
    assert {kind for kind, _, _ in found} == {"all-gather", "reduce-scatter", "all-reduce"}
    assert all(size == 2 for _, _, size in found)


def test_data_axis_adds_only_the_gradient_and_metric_reductions():
    """On a 4 x 2 mesh, collectives over the `model` axis (groups of 2) are exactly those of the
    1 x 2 mesh with a quarter of the batch; the `data` axis (groups of 4) only reduces
    gradients and metrics."""
    found = _collectives(compiled_train_step(mesh_of(4, 2)))
    local = BATCH // 4
    model_axis = sorted((kind, shape[0]) for kind, shape, size in found if size == 2)
    assert model_axis == sorted([
        ("all-gather", (local, 3, 3, 16)), ("all-gather", (local, 1, 1, 16)),
        ("all-gather", (local, 32)), ("reduce-scatter", (local, 3, 3, 8)),
        ("reduce-scatter", (local, 1, 1, 8)), ("reduce-scatter", (local, 16)),
        ("all-reduce", (local, 10))])
    data_axis = [(kind, shape) for kind, shape, size in found if size == 4]
    assert data_axis and all(kind == "all-reduce" for kind, _ in data_axis)
    gradient_shapes = {s for _, shapes in data_axis for s in shapes}
    assert (11, 11, 3, 4) in gradient_shapes  # conv1's per-column kernel gradient
    assert all(len(s) != 4 or s[0] != local for s in gradient_shapes)  # no activations


def loss_and_grads(mesh, images, labels, key):
    model = model_on(mesh)

    def loss_fn(model):
        logits = model(images, dropout_key=key)
        return steps.cross_entropy(logits, labels).mean()

    with jax.set_mesh(mesh):
        loss, grads = nnx.jit(nnx.value_and_grad(loss_fn))(model)
    return float(loss), jax.tree.map(np.asarray, nnx.to_pure_dict(grads))


@pytest.mark.slow
def test_eight_devices_equal_one_device():
    """Loss and every gradient on a 4 x 2 mesh equal the single-device ones (float32), with
    dropout on: the masks are drawn for the global batch, whatever the mesh."""
    images, labels = batch(1)
    key = jax.random.key(7)
    loss_1, grads_1 = loss_and_grads(mesh_of(1, 1), images, labels, key)
    loss_8, grads_8 = loss_and_grads(mesh_of(4, 2), images, labels, key)
    loss_2, grads_2 = loss_and_grads(mesh_of(1, 2), images, labels, key)
    assert loss_8 == pytest.approx(loss_1, rel=1e-6) and loss_2 == pytest.approx(loss_1, rel=1e-6)
    for (path, g1), g8, g2 in zip(jax.tree_util.tree_leaves_with_path(grads_1),
                                  jax.tree.leaves(grads_8), jax.tree.leaves(grads_2)):
        scale = np.abs(g1).max()
        assert scale > 0, path
        np.testing.assert_allclose(g8, g1, rtol=1e-5, atol=1e-5 * scale, err_msg=str(path))
        np.testing.assert_allclose(g2, g1, rtol=1e-5, atol=1e-5 * scale, err_msg=str(path))
