"""The paper's CIFAR-10 experiments (sections 3.1 and 3.3, Figure 1): cuda-convnet's four-layer
conv-local network (`layers-conv-local-11pct.cfg` and its parameter file) on 24 x 24 crops.

Run (tfds downloads CIFAR-10 on first use):
    python -m alexnet_jax.main --config=configs/cifar10.py --workdir=runs/cifar10
From a local ImageFolder copy:
    python -m alexnet_jax.main --config=configs/cifar10.py --workdir=runs/cifar10 \
        --config.data.path=../shared/data/cifar10
The paper's ablations: --config.model.activation=tanh (Figure 1: ReLU reaches 25% training
error six times faster), --config.model.lrn=False (13% test error instead of 11%).
"""

from configs import default


def get_config():
    config = default.get_config()
    with config.unlocked():
        data = config.data
        data.name = "cifar10"
        data.resize_size = 32       # CIFAR-10 keeps its own resolution...
        data.prepared = "none"      # ...and its 32 x 32 files need no down-sampling
        data.crop_size = 24         # ...and trains on random 24 x 24 crops and their mirrors
        data.lighting = "none"      # cuda-convnet's CIFAR-10 nets used no PCA lighting
        data.stats_sample = 0       # mean image over all 50,000 training images

        model = config.model
        model.arch = "cifar_conv_local"
        model.conv_widths = (64, 64, 64, 32)  # conv1, conv2, local3, local4
        model.lrn_n = 9             # cuda-convnet cmrnorm: size 9, scale 0.001, pow 0.75, k 1
        model.lrn_k = 1.0
        model.lrn_alpha = 0.001
        model.lrn_alpha_over_n = True
        model.dropout_rate = 0.0

        optimizer = config.optimizer
        optimizer.learning_rate = 0.001  # cuda-convnet epsW
        optimizer.weight_decay = 0.004   # wc of local3 and local4...
        optimizer.layer_weight_decay.conv1 = 0.0  # ...none on the convolutions...
        optimizer.layer_weight_decay.conv2 = 0.0
        optimizer.layer_weight_decay.fc10 = 0.01  # ...and 0.01 on the classifier

        config.schedule.patience = 3
        config.schedule.max_reductions = 2   # 0.001 -> 0.0001 -> 0.00001, then stop
        train = config.train
        train.num_epochs = 300               # upper bound; the plateau schedule ends it earlier
        train.log_every_steps = 100
        train.checkpoint_every_steps = 2000
        train.eval_batch_size = 500
    return config
