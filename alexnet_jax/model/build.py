"""Turning a config into its mesh and model, born sharded, or a model carrying saved parameters."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from alexnet_jax.common import sharding
from alexnet_jax.common.run_files import FORMULATION_KEYS
from alexnet_jax.model import compiler
from alexnet_jax.model.alexnet import AlexNet
from alexnet_jax.model.cifar import CifarConvLocal
from alexnet_jax.model.layers import LRNParams
from alexnet_jax.model.sharded_network import ShardedNetwork

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def build_mesh(config: ml_collections.ConfigDict) -> Mesh:
    """The (data, model) mesh over every device of every process."""
    return sharding.make_mesh(config.mesh.model, config.model.columns)


def lrn_params(config: ml_collections.ConfigDict) -> LRNParams | None:
    m = config.model
    return LRNParams(n=m.lrn_n, k=m.lrn_k, alpha=m.lrn_alpha, beta=m.lrn_beta,
                     alpha_over_n=m.lrn_alpha_over_n) if m.lrn else None


# The formulation measured fastest on each platform (docs/performance.md): on GPUs (H200,
# bfloat16, forward + backward) LRN as shifted slices 0.34 ms against 1.13 ms and conv1 as
# space-to-depth 0.37 ms against 0.91 ms; on the CPU the banded matmul and the direct
# convolution are faster. Both pairs compute the same values (tests/test_model.py).
# On the CPU the stride-1 convolutions' kernel gradients as matrix products (layers.conv):
# XLA:CPU's backward-filter convolutions took 6-9 times their forward pass (forward + backward
# of conv2: 2,374 ms against 5,225; AVX2 host, 2026-12-07, docs/performance.md). conv1 stays
# direct with XLA's gradient there (2,059 ms; as space-to-depth with matrix products 1,806 in
# isolation, but the whole step was slower). On GPUs XLA's own (cuDNN's) gradients, unchanged.
# Those CPU figures were YNNPACK's convolutions (JAX 0.10's default); with XLA:CPU's own
# (cpu_conv_impl=eigen, model/compiler.py: the step 1.06-1.29x faster) XLA's kernel gradients
# and the matrix products tie in the whole step, so the products stay.
FASTEST = {"gpu": {"lrn_impl": "slices", "conv1_impl": "space_to_depth",
                   "conv_grad_impl": "xla", "cpu_conv_impl": compiler.NOT_ON_CPU},
           "tpu": {"lrn_impl": "slices", "conv1_impl": "space_to_depth",
                   "conv_grad_impl": "xla", "cpu_conv_impl": compiler.NOT_ON_CPU},
           "cpu": {"lrn_impl": "matmul", "conv1_impl": "direct", "conv_grad_impl": "matmul",
                   "cpu_conv_impl": "eigen"}}


def formulations(config: ml_collections.ConfigDict, platform: str | None = None
                 ) -> dict[str, str]:
    """model.lrn_impl, model.conv1_impl, model.conv_grad_impl and model.cpu_conv_impl with
    `auto` resolved for `platform` (default: the platform JAX runs on)."""
    fastest = FASTEST.get(platform or jax.default_backend(), FASTEST["cpu"])
    return {key: fastest[key] if config.model.get(key, "auto") == "auto" else config.model[key]
            for key in FORMULATION_KEYS if key != "column_impl"}


def compiler_options(config: ml_collections.ConfigDict, platform: str | None = None
                     ) -> dict[str, str] | None:
    """What a `jax.jit` running this config's network on `platform` (default: JAX's) asks of
    XLA's compiler (model/compiler.py)."""
    platform = platform or jax.default_backend()
    return compiler.compiler_options(formulations(config, platform)["cpu_conv_impl"], platform)


def model_factory(config: ml_collections.ConfigDict, num_classes: int, mesh: Mesh):
    """A function (rngs) -> the network of config.model.arch."""
    m = config.model
    if m.arch == "cifar_conv_local":
        return lambda rngs: CifarConvLocal(
            num_classes=num_classes, input_size=config.data.crop_size,
            widths=tuple(m.conv_widths), lrn=lrn_params(config), activation=m.activation,
            cpu_conv_impl=formulations(config)["cpu_conv_impl"], dtype=DTYPES[m.dtype],
            mesh=mesh, rngs=rngs)
    return lambda rngs: AlexNet(
        num_classes=num_classes, input_size=config.data.crop_size, columns=m.columns,
        conv_widths=tuple(m.conv_widths), fc_widths=tuple(m.fc_widths), lrn=lrn_params(config),
        overlap_pool=m.overlap_pool, dropout_rate=m.dropout_rate, activation=m.activation,
        conv1_geometry=m.conv1_geometry, column_impl=m.column_impl, init_std=m.init_std,
        positive_bias=m.positive_bias, **formulations(config),
        dtype=DTYPES[m.dtype], mesh=mesh, rngs=rngs)


def build_model(config: ml_collections.ConfigDict, num_classes: int,
                mesh: Mesh) -> ShardedNetwork:
    """The model with its paper initialisation, its parameters created already sharded."""
    create = model_factory(config, num_classes, mesh)
    with jax.set_mesh(mesh):
        return nnx.jit(lambda: create(nnx.Rngs(config.seed)))()


def abstract_model(config: ml_collections.ConfigDict, num_classes: int,
                   mesh: Mesh) -> ShardedNetwork:
    """The model's shapes and shardings without allocating it (for restoring checkpoints)."""
    create = model_factory(config, num_classes, mesh)
    with jax.set_mesh(mesh):
        return nnx.eval_shape(lambda: create(nnx.Rngs(config.seed)))


def model_with_params(config: ml_collections.ConfigDict, num_classes: int,
                      params: dict[str, Any], mesh: Mesh | None = None) -> ShardedNetwork:
    """The network of `config` carrying `params` (e.g. NumPy arrays from
    checkpointing.load_params), each placed with the sharding the model declares for it on
    `mesh` (default: the config's mesh). Raises ValueError naming the first layer whose shape
    does not match, e.g. when the checkpoint was written by a different config."""
    mesh = mesh if mesh is not None else build_mesh(config)
    graphdef, state = nnx.split(abstract_model(config, num_classes, mesh))
    expected = state.to_pure_dict()
    if jax.tree.structure(expected) != jax.tree.structure(params):
        raise ValueError(f"the parameters hold layers {sorted(params)}; this config's model has "
                         f"{sorted(expected)}")

    def place(path, want, value):
        if tuple(value.shape) != tuple(want.shape):
            raise ValueError(f"{jax.tree_util.keystr(path)} has shape {tuple(value.shape)}; this "
                             f"config's model expects {tuple(want.shape)}")
        # the abstract model's shardings name an abstract mesh: place on the concrete one
        where = jax.sharding.NamedSharding(mesh, want.sharding.spec)
        return jax.device_put(np.asarray(value, dtype=want.dtype), where)

    nnx.replace_by_pure_dict(state, jax.tree.map_with_path(place, expected, params))
    return nnx.merge(graphdef, state)
