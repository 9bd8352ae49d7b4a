"""Checks of a config before a run touches anything: each problem gets one clear message."""

from __future__ import annotations

import ml_collections

from alexnet_jax.common.errors import UserError
from alexnet_jax.data.catalog import SOURCE_NAMES
from alexnet_jax.model import layers
from alexnet_jax.model.compiler import CPU_CONV_IMPLS
from alexnet_jax.training import optim
from alexnet_jax.training.schedule import SCHEDULES

ARCHS = {"alexnet": (5, 2), "cifar_conv_local": (4, 0)}  # arch -> (conv widths, fc widths)
# the layers each network's parameters are named by (optimizer.layer_weight_decay's keys)
ARCH_LAYERS = {"alexnet": ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"),
               "cifar_conv_local": ("conv1", "conv2", "local3", "local4", "fc10")}


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise UserError(f"{key}={value!r} is not valid; use one of: "
                        f"{', '.join(map(str, allowed))} (--config.{key}=...).")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise UserError for the first invalid value (those that need no devices or data)."""
    if config.seed < 0:
        raise UserError(f"seed={config.seed} must be >= 0 (it seeds the initialisation, the "
                        "data order and dropout).")
    _validate_data(config.data)
    _validate_model(config.model, config.data)
    _validate_optimizer(config.optimizer, config.model.arch)
    _validate_large_batch(config)
    _validate_schedule_and_training(config.schedule, config.train)


def _validate_data(d: ml_collections.ConfigDict) -> None:
    _choice("data.name", d.name, SOURCE_NAMES)
    _choice("data.mean", d.mean, ("image", "channel", "none"))
    _choice("data.lighting", d.lighting, ("cuda_convnet2", "eigenvalue", "none"))
    _choice("data.stats_source", d.stats_source, ("dataset", "imagenet"))
    _choice("data.process_sharding", d.process_sharding, ("interleaved", "split"))
    if d.name == "prepared" and (not d.path or d.process_sharding != "interleaved"):
        raise UserError("data.name=prepared reads the prepared folder at data.path (set "
                        "--config.data.path=<data_dir>/alexnet_prepared/<config>/<version>), "
                        "every process from the same order: data.process_sharding must be "
                        f"interleaved (got {d.process_sharding!r}).")
    if d.crop_size < 1 or d.resize_size < 1:
        raise UserError(f"data.crop_size ({d.crop_size}) and data.resize_size "
                        f"({d.resize_size}) must be positive.")
    if d.prepared != "none" and d.prepared != str(d.resize_size):
        raise UserError(f"data.prepared={d.prepared!r} must be 'none' or the resize size "
                        f"'{d.resize_size}' (data.resize_size): the images are prepared once as "
                        "the paper's resize_size x resize_size squares. With another resize "
                        f"size, set both: --config.data.resize_size={d.resize_size} "
                        f"--config.data.prepared={d.resize_size}.")
    _choice("data.prepared_format", d.prepared_format, ("jpeg", "jpeg444", "raw"))
    _choice("data.file_format", d.file_format, ("tfrecord", "array_record"))
    if d.file_format == "array_record" and d.prepared == "none" and d.name != "prepared":
        raise UserError("data.file_format=array_record is the storage of prepared squares, "
                        f"but data.prepared=none; set --config.data.prepared={d.resize_size}.")
    if not 1 <= d.prepared_quality <= 100 or d.synthetic_examples < 1 or d.num_classes < 2:
        raise UserError(f"data.prepared_quality ({d.prepared_quality}) must be in 1..100, "
                        f"data.synthetic_examples ({d.synthetic_examples}) >= 1 and "
                        f"data.num_classes ({d.num_classes}) >= 2.")
    if d.crop_size > d.resize_size:
        raise UserError(f"data.crop_size={d.crop_size} is larger than the resized image "
                        f"(data.resize_size={d.resize_size}): crops are cut from the "
                        "resize_size x resize_size square. Lower the crop or raise the resize "
                        "size (the paper: 224 crops of 256 squares).")


def _validate_model(m: ml_collections.ConfigDict, d: ml_collections.ConfigDict) -> None:
    _choice("model.arch", m.arch, tuple(ARCHS))
    _choice("model.columns", m.columns, (1, 2))
    _choice("model.activation", m.activation, ("relu", "tanh"))
    _choice("model.conv1_geometry", m.conv1_geometry, ("cuda_convnet", "caffe", "torchvision"))
    _choice("model.column_impl", m.column_impl, ("split", "grouped"))
    _choice("model.lrn_impl", m.lrn_impl, ("auto", "matmul", "slices"))
    _choice("model.conv1_impl", m.conv1_impl, ("auto", "direct", "space_to_depth"))
    _choice("model.conv_grad_impl", m.get("conv_grad_impl", "auto"), ("auto", "xla", "matmul"))
    _choice("model.cpu_conv_impl", m.get("cpu_conv_impl", "auto"), ("auto", *CPU_CONV_IMPLS))
    _choice("model.dtype", m.dtype, ("float32", "bfloat16"))
    if m.lrn_n < 1 or m.lrn_n % 2 == 0:
        # an even window has no centre: the LRN formulations (matmul, slices) would disagree
        raise UserError(f"model.lrn_n={m.lrn_n} must be odd and >= 1: the window of channels "
                        "is centred on each channel (the paper: 5).")
    if not 0.0 <= m.dropout_rate < 1.0:
        raise UserError(f"model.dropout_rate={m.dropout_rate} must be in [0, 1) (0 turns "
                        "dropout off; the paper uses 0.5).")
    conv_count, fc_count = ARCHS[m.arch]
    if len(m.conv_widths) != conv_count or (fc_count and len(m.fc_widths) != fc_count):
        raise UserError(f"model.arch={m.arch!r} needs {conv_count} model.conv_widths"
                        + (f" and {fc_count} model.fc_widths" if fc_count else "")
                        + f"; got {tuple(m.conv_widths)} and {tuple(m.fc_widths)}.")
    if m.arch == "alexnet":
        widths = (*m.conv_widths, *m.fc_widths)
        if m.columns == 2 and any(w % 2 for w in widths):
            raise UserError(f"with two columns every layer width must be even (each column "
                            f"holds half); got conv {tuple(m.conv_widths)}, fc "
                            f"{tuple(m.fc_widths)}.")
        if layers.feature_map_sizes(d.crop_size, m.conv1_geometry, m.overlap_pool)["pool5"] < 1:
            raise UserError(f"data.crop_size={d.crop_size} is too small for AlexNet's five "
                            "layers (pool5 would be empty); use at least 67 (the paper: 224).")


def _validate_optimizer(o: ml_collections.ConfigDict, arch: str) -> None:
    _choice("optimizer.decay_mode", o.decay_mode, ("paper", "decoupled"))
    if o.learning_rate <= 0 or not 0 <= o.momentum < 1 or o.weight_decay < 0:
        raise UserError(f"optimizer: learning_rate ({o.learning_rate}) must be > 0, momentum "
                        f"({o.momentum}) in [0, 1), weight_decay ({o.weight_decay}) >= 0.")
    unknown = sorted(set(dict(o.layer_weight_decay)) - set(ARCH_LAYERS[arch]))
    if unknown:
        raise UserError(f"optimizer.layer_weight_decay names {unknown}, which are not layers of "
                        f"model.arch={arch!r} ({', '.join(ARCH_LAYERS[arch])}); set it as "
                        "--config.optimizer.layer_weight_decay='{\"fc8\": 0.01}'.")
    if any(value > 0 for value in dict(o.layer_weight_decay).values()) and o.weight_decay <= 0:
        raise UserError("optimizer.layer_weight_decay needs optimizer.weight_decay > 0 (the "
                        "per-layer values are multiples of it); set them to 0 to turn the "
                        "decay off everywhere.")


def _validate_schedule_and_training(s: ml_collections.ConfigDict,
                                    t: ml_collections.ConfigDict) -> None:
    _choice("schedule.name", s.name, SCHEDULES)
    _choice("schedule.after_last", s.after_last, ("stop", "continue"))
    if not 0 < s.factor <= 1 or s.patience < 1 or s.max_reductions < 0:
        raise UserError(f"schedule: factor ({s.factor}) must be in (0, 1], patience "
                        f"({s.patience}) >= 1, max_reductions ({s.max_reductions}) >= 0.")
    if t.batch_size < 1 or t.eval_batch_size < 1:
        raise UserError("train.batch_size and train.eval_batch_size must be positive.")
    if t.num_epochs < 1 and t.num_steps < 1:
        raise UserError("set train.num_epochs >= 1 or train.num_steps >= 1.")
    if t.log_every_steps < 1 or t.checkpoint_every_steps < 1 or t.keep_checkpoints < 1:
        raise UserError("train.log_every_steps, train.checkpoint_every_steps and "
                        "train.keep_checkpoints must be >= 1.")
    if not 0.0 <= t.stop_at_train_error < 1.0:
        raise UserError(f"train.stop_at_train_error={t.stop_at_train_error} must be in [0, 1) "
                        "(a training top-1 error; 0 turns the target off).")
    steps = tuple(t.profile_steps)
    if steps and (len(steps) != 2 or not 1 <= steps[0] <= steps[1]):
        raise UserError(f"train.profile_steps={steps} must be () or (first, last) with "
                        "1 <= first <= last, e.g. --config.train.profile_steps='(10, 12)'.")
    for views in (t.epoch_eval_views, *t.final_eval_views):
        _choice("train.epoch_eval_views / train.final_eval_views", views, (1, 10))


def _validate_large_batch(config: ml_collections.ConfigDict) -> None:
    """The large-batch switches: the optimizer, the rate's scaling and its warm-up."""
    o, s = config.optimizer, config.schedule
    _choice("optimizer.name", o.name, ("momentum", "lars"))
    _choice("optimizer.lr_scaling", o.lr_scaling, ("none", "linear"))
    if o.trust_coefficient <= 0 or s.warmup_epochs < 0:
        raise UserError(f"optimizer.trust_coefficient ({o.trust_coefficient}) must be > 0 and "
                        f"schedule.warmup_epochs ({s.warmup_epochs}) >= 0.")
    if o.name == "lars" and o.decay_mode != "paper":
        raise UserError(
            f"optimizer.decay_mode={o.decay_mode} is momentum SGD's: LARS adds the weight decay "
            "to the gradient before its trust ratio and momentum (You et al. 2017), the "
            "paper's placement. Use optimizer.decay_mode=paper with optimizer.name=lars "
            "(optimizer.decay_biases and optimizer.layer_weight_decay apply to LARS too).")
    scaled = optim.initial_learning_rate(o.learning_rate, config.train.batch_size, o.lr_scaling)
    if s.warmup_epochs > 0 and scaled <= o.learning_rate:
        # linear scaling below the paper's batch scales the rate down: the "warm-up" would
        # start above its target and ramp down to it
        batch = config.train.batch_size
        raise UserError(
            f"schedule.warmup_epochs={s.warmup_epochs:g} ramps the rate up from "
            f"optimizer.learning_rate ({o.learning_rate:g}) to the linearly scaled rate "
            "(Goyal et al. 2017), but here the scaled rate is not above it "
            + ("(optimizer.lr_scaling=none)" if o.lr_scaling != "linear" else
               f"(train.batch_size={batch}, the paper's 128)" if batch == optim.PAPER_BATCH else
               f"(train.batch_size={batch} x {o.learning_rate:g} / 128 = {scaled:g}: a "
               "warm-up would ramp the rate down)")
            + ": there is nothing to ramp up to. Set optimizer.lr_scaling=linear with a batch "
            "larger than 128, or schedule.warmup_epochs=0.")


def validate_for_mesh(config: ml_collections.ConfigDict, data_axis: int) -> None:
    """Batch sizes must split evenly over the `data` axis (and so over the processes feeding
    its rows: their number divides the axis), and a micro-batch too."""
    k = config.train.accumulate_steps
    if k < 1 or config.train.batch_size % k:
        raise UserError(f"train.accumulate_steps={k} must be >= 1 and divide "
                        f"train.batch_size={config.train.batch_size}.")
    for key, parts in (("batch_size", data_axis * k), ("eval_batch_size", data_axis)):
        batch = config.train[key]
        if batch % parts:
            what = (f"the mesh's data axis ({data_axis} devices)" if parts == data_axis else
                    f"{k} micro-batches on the mesh's data axis ({data_axis} devices)")
            raise UserError(f"train.{key}={batch} cannot be split evenly over {what}. Use a "
                            f"multiple of {parts}, or change the mesh (--config.mesh.model, the "
                            "number of devices) or train.accumulate_steps.")
