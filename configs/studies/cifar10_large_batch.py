"""Large batches at this machine's scale: does the linear scaling rule (with warm-up) or LARS
keep the paper's CIFAR-10 accuracy when the batch grows 8-fold?

Three arms of configs/cifar10.py at an equal budget of 8 epochs (rate /10 after epoch 6):
- `batch128`: the paper's batch and rate (0.001);
- `batch1024_linear`: batch 1,024 computed as 8 accumulated micro-batches of 128 (the same
  memory), the rate scaled linearly to 0.008 (Goyal et al. 2017) and warmed up over 2 epochs;
- `batch1024_lars`: the same batch with LARS (You et al. 2017; trust coefficient 0.001), a
  global rate of 0.1 (0.0125 scaled linearly), warmed up over 2 epochs: LARS's step is about
  rate x 0.001 / (1 - momentum) of each weight's norm, so 0.1 gives about the relative step of
  plain SGD at 0.008.
An 8-fold batch has an eighth of the steps per epoch (48 instead of 390), so at an equal number
of epochs the large-batch arms take far fewer optimizer steps: the question is how much of the
accuracy each rule keeps. One run takes about 37 minutes here (measured: 8 epochs of about 4
minutes at 210 images/s, the final 10-view evaluation 2 minutes; accumulation adds no work),
the study about two hours.

Run:
    nice -n 19 python experiments/run_study.py --study=configs/studies/cifar10_large_batch.py \
        --dir=runs/studies/cifar10_large_batch --record=docs/results/cifar10_large_batch \
        --config.data.path=../shared/data/cifar10
"""


def get_study():
    large = {"train.batch_size": 1024, "train.accumulate_steps": 8,
             "optimizer.lr_scaling": "linear", "schedule.warmup_epochs": 2.0}
    return {
        "name": "cifar10_large_batch",
        "description": "Batch 128 against batch 1,024 (8 accumulated micro-batches) with linear "
                       "rate scaling and warm-up, and with LARS, on CIFAR-10 at 8 epochs "
                       "(rate /10 after epoch 6). Validation = CIFAR-10's test set.",
        "base_config": "configs/cifar10.py",
        "overrides": {"train.num_epochs": 8, "schedule.name": "step",
                      "schedule.step_epochs": (6,)},
        "seeds": (0,),
        "baseline": "batch128",
        "arms": [{"name": "batch128", "overrides": {}},
                 {"name": "batch1024_linear", "overrides": large,
                  "paper": {"note": "Goyal et al.: no loss at 32x the batch (ResNet-50)"}},
                 {"name": "batch1024_lars",
                  "overrides": {**large, "optimizer.name": "lars",
                                "optimizer.learning_rate": 0.0125},
                  "paper": {"note": "You et al.: AlexNet at batch 8,192"}}],
    }
