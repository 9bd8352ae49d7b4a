"""The paper's ablations on Imagenette at 128 pixels (configs/imagenette128.py), trained until
the network fits its training images: LRN (section 3.3), dropout (4.2) and two columns (3.2),
each switched off alone, against the baseline, several seeds an arm.

Why a second 128-pixel study: imagenette128_ablations stops after 7 epochs, while validation
error is still falling 3-6 points an epoch and the training images are still 31-38% wrong, so it
measures how fast each network starts to learn, not what it ends at, and dropout cannot show the
overfitting it prevents. Here every run trains 30 epochs (2,190 steps of 128): 20 at the paper's
0.01, the rate divided by 10 after epochs 20 and 26 (the paper's division by 10 when validation
error stops improving, at fixed epochs so that every arm and seed gets the same schedule). Why
20: at 224 pixels the same recipe's validation error kept falling at 0.01 until about epoch 14
(docs/results/imagenette_runs.md), and the 7-epoch runs fall as fast at 128 pixels; 20 leaves
room for the slower arms, and the two cuts near the end let each run settle at its minimum. The
pilot (baseline and no_lrn, seeds 0 and 1) checks that the baseline's training images end well
below its validation error (the report's "train top-1 error (centre, after the run)").

Not run here: overlapping pooling (its +0.4 points is below one model's sampling noise on
Imagenette's 3,925 validation images: the standard error of a 20% error there is 0.64 points),
and PCA lighting (at 7 epochs the Welch interval, [-1.47, +0.73], had excluded the paper's +1;
the block fit's, [-2.78, +2.03], does not, so lighting is the next arm to add when the budget
allows).

Evaluation: the centre crop after every epoch, the centre crop and the paper's 10 views at the
end, and the training images' centre crops after the run (the study runner).

Run (resumable; finished runs are read from the committed records; the pilot first):
    nice -n 19 python experiments/run_study.py \
        --study=configs/studies/imagenette128_converged.py \
        --dir=runs/studies/imagenette128_converged \
        --record=docs/results/imagenette128_converged \
        --config.data.path=../shared/data/imagenette2-224 --arms=baseline,no_lrn --rounds=2
and then the same without --arms and --rounds. Seeds 0-2 of every arm ran at commit d5674bd;
LRN's seeds 3 and 4 run from a worktree of one later commit, both arms of a seed at the same
commit, so that the seed's block absorbs whatever the commit changed (docs/studies.md):
    nice -n 19 python experiments/run_study.py ... --arms=baseline,no_lrn
"""

# LRN's two arms get seeds 3 and 4 (issue 44): at the relative size of the paper's effect (+0.81
# points: its 1.4 of 37.5% scaled to our 21.8%) the 3-seed fit has 62% power, and 5 seeds an arm
# give about 86% in the fit where the other arms keep their 3 (df 8:
# block_design.power(0.37, 0.81, 5, 4, degrees=8))
FIVE_SEEDS = (0, 1, 2, 3, 4)

ARMS = [
    {"name": "baseline", "overrides": {}, "seeds": FIVE_SEEDS},
    {"name": "no_lrn", "overrides": {"model.lrn": False}, "paper": {"top1": 1.4, "top5": 1.2},
     "seeds": FIVE_SEEDS},
    {"name": "no_dropout", "overrides": {"model.dropout_rate": 0.0},
     "paper": {"note": "overfits: a larger val - train gap"}},
    {"name": "one_column", "overrides": {"model.columns": 1},
     "paper": {"top1": 1.7, "top5": 1.2}},
]


def get_study():
    return {
        "name": "imagenette128_converged",
        "description": "The paper's ablations on Imagenette at 128 pixels (146 squares, 128 "
                       "crops), trained to convergence: 30 epochs (step schedule: lr 0.01, /10 "
                       "after epochs 20 and 26). Validation = Imagenette's val split, centre "
                       "crop and 10 views.",
        "base_config": "configs/imagenette128.py",
        "overrides": {"train.num_epochs": 30, "schedule.name": "step",
                      "schedule.step_epochs": (20, 26), "train.final_eval_views": (1, 10)},
        "seeds": (0, 1, 2),
        "baseline": "baseline",
        "arms": ARMS,
    }
