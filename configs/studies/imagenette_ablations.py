"""The paper's ablations on Imagenette (10 ImageNet classes): LRN (section 3.3), overlapping
pooling (3.4), dropout (4.2), two columns (3.2) and PCA lighting (4.1), each switched off alone.

Budget: 6 epochs (438 steps of 128), the learning rate 0.01 divided by 10 after epoch 5, so every
run ends at a lower rate instead of being cut off mid-plateau; the baseline with three seeds to
show the seed-to-seed noise. The full network at 224 pixels runs about 8 minutes an epoch on 2
CPU cores, so the study needs about 8 CPU hours; the paper's differences (0.4 to 1.7 points of
ImageNet top-1 error after 90 epochs) are the size of the noise at this budget.

Run:
    nice -n 19 python experiments/run_study.py --study=configs/studies/imagenette_ablations.py \
        --dir=runs/studies/imagenette_ablations --config.data.path=../shared/data/imagenette2-224
"""


def get_study():
    return {
        "name": "imagenette_ablations",
        "description": "The paper's ablations on Imagenette at a 6-epoch budget (step schedule: "
                       "lr 0.01, /10 after epoch 5). Validation = Imagenette's val split.",
        "base_config": "configs/imagenette.py",
        "overrides": {"train.num_epochs": 6, "schedule.name": "step",
                      "schedule.step_epochs": (5,)},
        "seeds": (0,),
        "baseline": "baseline",
        "arms": [
            {"name": "baseline", "overrides": {}, "seeds": (0, 1, 2)},
            {"name": "no_lrn", "overrides": {"model.lrn": False},
             "paper": {"top1": 1.4, "top5": 1.2}},
            {"name": "no_overlap", "overrides": {"model.overlap_pool": False},
             "paper": {"top1": 0.4, "top5": 0.3}},
            {"name": "no_dropout", "overrides": {"model.dropout_rate": 0.0},
             "paper": {"note": "overfits: a larger val - train gap"}},
            {"name": "one_column", "overrides": {"model.columns": 1},
             "paper": {"top1": 1.7, "top5": 1.2}},
            {"name": "no_lighting", "overrides": {"data.lighting": "none"},
             "paper": {"top1": 1.0, "note": "'over 1%' top-1"}},
        ],
    }
