"""The paper's network and recipe on Imagenette (10 ImageNet classes, 9,469 train / 3,925 val).

Run (tfds downloads Imagenette on first use):
    python -m alexnet_jax.main --config=configs/imagenette.py --workdir=runs/imagenette
Offline, from a local copy of the ImageFolder tree:
    python -m alexnet_jax.main --config=configs/imagenette.py --workdir=runs/imagenette \
        --config.data.name=folder --config.data.path=../shared/data/imagenette2-224
"""

from configs import default


def get_config():
    config = default.get_config()
    with config.unlocked():
        config.data.name = "imagenette"
        config.train.num_epochs = 30            # ~2,200 steps of 128: Imagenette is 1/135 of ImageNet
        config.schedule.patience = 2            # epochs are 135x shorter: react sooner
        config.train.checkpoint_every_steps = 200
        config.train.log_every_steps = 10
    return config
