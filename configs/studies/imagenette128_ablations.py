"""The paper's ablations on Imagenette at 128 pixels (configs/imagenette128.py; the resolution
after Mishkin et al. 2017's finding that 128-pixel inputs preserve architecture rankings): LRN (section 3.3), overlapping pooling (3.4), dropout (4.2), two columns
(3.2) and PCA lighting (4.1), each switched off alone, three seeds an arm.

Budget: 7 epochs (511 steps of 128) at learning rate 0.01, divided by 10 after epoch 6, so every
run ends at a lowered rate instead of being cut off mid-plateau; evaluation on the centre crop
(each epoch and at the end: the 10 views would add 6 minutes a run). Measured before choosing
it, on the 2-core CPU machine with the real input pipeline and nothing else running: 41 images/s
of training (the step alone: 69) and 103 images/s of evaluation, so an epoch takes 4.5 minutes
and a run about 33, one ~35-minute slice of a session. Recorded (each run's time is in
results.json): one_column, alone, 31 minutes; baseline, no_lrn and no_overlap 57-64 minutes,
sharing the two cores with the test suite; on a later session's machine of the same kind (2
cores, about 100 images/s of training), seed 1 of no_lrn, no_overlap and no_dropout alone in
13, 17 and 18 minutes; seed 2 of the five ablated arms alone in 14-25 minutes (846-1,468 s)
on a third session's machine. The runs go seed by seed (every arm's seed 0 before any arm's
seed 1) and are recorded as they finish, so the study spans as many sessions as it needs. The
224-pixel study (imagenette_ablations) is the full-size version, for GPUs.

Run (resumable; finished runs are read from the committed records):
    nice -n 19 python experiments/run_study.py \
        --study=configs/studies/imagenette128_ablations.py --dir=runs/studies/imagenette128_ablations \
        --record=docs/results/imagenette128_ablations \
        --config.data.path=../shared/data/imagenette2-224
"""

ARMS = [
    {"name": "baseline", "overrides": {}},
    {"name": "no_lrn", "overrides": {"model.lrn": False}, "paper": {"top1": 1.4, "top5": 1.2}},
    {"name": "no_overlap", "overrides": {"model.overlap_pool": False},
     "paper": {"top1": 0.4, "top5": 0.3}},
    {"name": "no_dropout", "overrides": {"model.dropout_rate": 0.0},
     "paper": {"note": "overfits: a larger val - train gap"}},
    {"name": "one_column", "overrides": {"model.columns": 1},
     "paper": {"top1": 1.7, "top5": 1.2}},
    {"name": "no_lighting", "overrides": {"data.lighting": "none"},
     "paper": {"top1": 1.0, "note": "'over 1%' top-1"}},
]


def get_study():
    return {
        "name": "imagenette128_ablations",
        "description": "The paper's ablations on Imagenette at 128 pixels (146 squares, 128 "
                       "crops), 7 epochs (step schedule: lr "
                       "0.01, /10 after epoch 6). Validation = Imagenette's val split, centre "
                       "crop.",
        "base_config": "configs/imagenette128.py",
        "overrides": {"train.num_epochs": 7, "schedule.name": "step",
                      "schedule.step_epochs": (6,), "train.final_eval_views": (1,)},
        "seeds": (0, 1, 2),
        "baseline": "baseline",
        "arms": ARMS,
    }
