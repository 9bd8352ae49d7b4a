"""The paper's network at a global batch of 4,096 (32 times the paper's 128): LARS with the
rate scaled linearly and warmed up, the recipe of the large-batch work on AlexNet.

Anchors (as their papers report them):
- Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour": the linear
  scaling rule (rate x batch / 256 for ResNet-50) with 5 epochs of gradual warm-up trains
  ResNet-50 at batch 8,192 to the accuracy of batch 256 (23.74% against 23.60% top-1 error).
- You, Gitman & Ginsburg 2017, "Large Batch Training of Convolutional Networks" (LARS): each
  layer's step scaled by |w| / |grad|; with it AlexNet trains at batch 8,192 and ResNet-50 at
  32,768, where AlexNet had been scaled only to batch 1,024 by the learning rate alone.
- Jia et al. 2018, "Highly Scalable Deep Learning Training System with Mixed-Precision":
  AlexNet to 58.7% top-1 in 4 minutes on 1,024 GPUs at batch 65,536 (LARS, mixed precision).

What changes from configs/default.py: train.batch_size 4,096; optimizer.name lars (momentum 0.9
and weight decay 0.0005 as the paper; trust coefficient 0.001); optimizer.lr_scaling linear
(0.01 x 4096 / 128 = 0.32 as LARS's global rate); schedule.warmup_epochs 5 from 0.01; a step
schedule (30, 60, 80) instead of the plateau, as the large-batch papers use. One GPU holds the
batch with train.accumulate_steps (e.g. 32 micro-batches of 128 on one device).

Run:
    python -m alexnet_jax.main --config=configs/large_batch.py --workdir=runs/large_batch \
        [--config.train.accumulate_steps=8]
"""

from configs import default


def get_config():
    config = default.get_config()
    with config.unlocked():
        config.train.batch_size = 4096
        config.train.eval_batch_size = 512
        config.optimizer.name = "lars"
        config.optimizer.lr_scaling = "linear"
        config.schedule.warmup_epochs = 5.0
        config.schedule.name = "step"
    return config
