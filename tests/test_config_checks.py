"""Config checks: each invalid value is refused before a run touches anything, with a message
that names the key and what to set."""

import pytest

from alexnet_jax.common.errors import UserError
from alexnet_jax.training import config_checks
from configs import cifar10, default


@pytest.mark.parametrize("changes,message", [
    ({"seed": -1}, r"seed=-1 must be >= 0"),
    ({"model.lrn_n": 4}, r"model.lrn_n=4 must be odd"),
    ({"model.lrn_n": 0}, r"model.lrn_n=0 must be odd and >= 1"),
    ({"model.dropout_rate": 1.0}, r"model.dropout_rate=1.0 must be in \[0, 1\)"),
    ({"model.columns": 3}, r"model.columns=3 is not valid; use one of: 1, 2"),
    ({"model.cpu_conv_impl": "onednn"},
     r"model.cpu_conv_impl='onednn' is not valid; use one of: auto, eigen, ynnpack"),
    ({"data.crop_size": 300}, r"data.crop_size=300 is larger than the resized image"),
    ({"data.resize_size": 300},
     r"--config.data.resize_size=300 --config.data.prepared=300"),
    ({"optimizer.layer_weight_decay": {"fc10": 0.01}},
     r"names \['fc10'\], which are not layers of model.arch='alexnet' \(conv1, .*fc8\)"),
    ({"train.batch_size": 0}, r"train.batch_size and train.eval_batch_size must be positive"),
])
def test_an_invalid_value_is_refused_naming_it(changes, message):
    config = default.get_config()
    for key, value in changes.items():
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    with pytest.raises(UserError, match=message):
        config_checks.validate(config)


def test_the_project_configs_and_their_per_layer_decay_pass():
    config_checks.validate(default.get_config())
    config = cifar10.get_config()
    assert set(config.optimizer.layer_weight_decay) == {"conv1", "conv2", "fc10"}
    config_checks.validate(config)
    config = default.get_config()
    config.optimizer.layer_weight_decay = {"fc8": 0.01}
    config_checks.validate(config)
