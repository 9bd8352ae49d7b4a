"""Large batches at this machine's scale: does the linear scaling rule (with warm-up) or LARS
keep the paper's CIFAR-10 accuracy when the batch grows 8-fold?

Three arms of configs/cifar10.py at an equal budget of 8 epochs (rate /10 after epoch 6):
- `batch128`: the paper's batch and rate (0.001);
- `batch1024_linear`: batch 1,024 computed as 8 accumulated micro-batches of 128 (the same
  memory), the rate scaled linearly to 0.008 (Goyal et al. 2017) and warmed up over 2 epochs;
- `batch1024_lars`: the same batch with LARS (You et al. 2017; trust coefficient 0.001),
  warmed up over 2 epochs, at the global rate a 2-epoch sweep chose (the rate whose run ends
  with the lowest training error among 1, 4 and 16 after linear scaling: optimizer.learning_rate
  0.125, 0.5, 2). LARS moves each layer by about rate x 0.001 / (1 - momentum) of its weights'
  norm a step (1% at rate 1), whatever its gradient's size, so its rate has no SGD equivalent:
  a first run at 0.1 (scaled; 0.1% a step, chosen by analogy with SGD's 0.008) still had 80%
  validation error after 5 of 8 epochs (loss 2.24, against 1.29 for the linear rule), so the
  rate is swept; that run bounds the sweep from below (epoch 2: 87% training error, against
  81% at rate 1).
An 8-fold batch has an eighth of the steps per epoch (48 instead of 390), so at an equal number
of epochs the large-batch arms take far fewer optimizer steps: the question is how much of the
accuracy each rule keeps. One run takes about 37 minutes here (measured: 8 epochs of about 4
minutes at 210 images/s, the final 10-view evaluation 2 minutes; accumulation adds no work), a
sweep run about 9, the study about three hours. Recorded (results.json): the linear-rule and
LARS runs 31 and 27 minutes alone, the batch-128 run 60 minutes sharing the cores with the test
suite, the sweep runs 7-8.

Run:
    nice -n 19 python experiments/run_study.py --study=configs/studies/cifar10_large_batch.py \
        --dir=runs/studies/cifar10_large_batch --record=docs/results/cifar10_large_batch \
        --config.data.path=../shared/data/cifar10
"""


LARS_RATES = (0.125, 0.5, 2.0)  # optimizer.learning_rate, before the linear scaling (x 8)


def get_study():
    large = {"train.batch_size": 1024, "train.accumulate_steps": 8,
             "optimizer.lr_scaling": "linear", "schedule.warmup_epochs": 2.0}
    lars = {**large, "optimizer.name": "lars"}
    sweep = [{"name": f"lars_lr{rate:g}", "sweep": True, "seeds": (0,),
              "overrides": {**lars, "optimizer.learning_rate": rate, "train.num_epochs": 2,
                            "train.final_eval_views": (1,)}}
             for rate in LARS_RATES]
    return {
        "name": "cifar10_large_batch",
        "description": "Batch 128 against batch 1,024 (8 accumulated micro-batches) with linear "
                       "rate scaling and warm-up, and with LARS (rate from a 2-epoch sweep), on "
                       "CIFAR-10 at 8 epochs (rate /10 after epoch 6). Validation = CIFAR-10's "
                       "test set.",
        "base_config": "configs/cifar10.py",
        "overrides": {"train.num_epochs": 8, "schedule.name": "step",
                      "schedule.step_epochs": (6,)},
        "seeds": (0,),
        "baseline": "batch128",
        "arms": [*sweep,
                 {"name": "batch128", "overrides": {}},
                 {"name": "batch1024_linear", "overrides": large,
                  "paper": {"note": "Goyal et al.: no loss at 32x the batch (ResNet-50)"}},
                 {"name": "batch1024_lars", "overrides": lars,
                  "choose": {"key": "optimizer.learning_rate",
                             "among": [arm["name"] for arm in sweep]},
                  "paper": {"note": "You et al.: AlexNet at batch 8,192"}}],
    }
