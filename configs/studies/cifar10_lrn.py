"""Local response normalisation on CIFAR-10 (paper section 3.3): "a four-layer CNN achieved a
13% test error rate without normalization and 11% with normalization".

The paper's figure comes from cuda-convnet's full recipe (configs/cifar10_11pct.py: about 520
epochs, days on a CPU). Here both arms get one equal budget: 12 epochs with the learning rate
divided by 10 after epochs 8 and 10, three seeds each. A run takes about 55 minutes on 2 cores:
12 epochs of about 4.5 minutes (175-220 images/s) and the final evaluations, measured on the
first recorded run (lrn seed 0: 60 minutes, its first 20 sharing the cores with the test suite;
an estimate of 32 minutes made before from shorter runs did not hold); on a later session's
faster machine of the same kind, 25 minutes alone (lrn seed 1's record: 1,489 s). A run
checkpoints at every epoch's end, so one cut off by a session's end loses at most an epoch; the
runs are recorded as they finish (docs/results/cifar10_lrn/), so the study spans sessions.

Run (about 5.5 hours on 2 cores in all; resumable, recorded runs are not run again):
    nice -n 19 python experiments/run_study.py --study=configs/studies/cifar10_lrn.py \
        --dir=runs/studies/cifar10_lrn --record=docs/results/cifar10_lrn \
        --config.data.path=../shared/data/cifar10
"""


def get_study():
    return {
        "name": "cifar10_lrn",
        "description": "LRN on and off on CIFAR-10 at an equal budget of 12 epochs (paper: 11% "
                       "test error with LRN, 13% without). The validation split is CIFAR-10's "
                       "test set.",
        "base_config": "configs/cifar10.py",
        "overrides": {"train.num_epochs": 12, "schedule.name": "step",
                      "schedule.step_epochs": (8, 10)},
        "seeds": (0, 1, 2),
        "baseline": "lrn",
        "arms": [{"name": "lrn", "overrides": {}},
                 {"name": "no_lrn", "overrides": {"model.lrn": False},
                  "paper": {"top1": 2.0, "note": "13% vs 11% test error, full recipe"}}],
    }
