"""What a study report reads off its runs' results (results.json's entries): the final errors,
the val - train gap, the epochs to a training-error target, the protocol they trained under.
Pure functions of the JSON: no JAX or TensorFlow."""

from __future__ import annotations

from typing import Any


def epochs_text(epochs: float) -> str:
    """Epochs as a report prints them: whole ones as integers, a part of one to 2 decimals."""
    return f"{epochs:g}" if float(epochs).is_integer() else f"{epochs:.2f}"


def protocol_text(results: dict[str, Any]) -> str:
    """What the study's compared (non-sweep) runs trained on and for how long, from their
    records: "imagenette, 128 px, 30 epochs"; "" before any run has a record."""
    runs = [run for arm in results.get("arms", {}).values() if not arm.get("sweep")
            for run in arm["runs"].values() if run.get("protocol") or run.get("data")]
    if not runs:
        return ""
    join = lambda found: "/".join(sorted(map(str, found)))  # noqa: E731
    datasets = {run["data"]["dataset"] for run in runs if run.get("data")}
    protocols = [run["protocol"] for run in runs if run.get("protocol")]
    crops = {p["crop_size"] for p in protocols if p.get("crop_size")}
    lengths = set()
    for p in protocols:
        length = (f"{p['num_steps']} steps" if (p.get("num_steps") or -1) > 0
                  else f"{p.get('num_epochs')} epochs")
        if p.get("stop_at_train_error"):
            length = (f"to {100 * p['stop_at_train_error']:g}% training error "
                      f"(at most {length})")
        lengths.add(length)
    parts = [join(datasets), f"{join(crops)} px" if crops else "", join(lengths)]
    return ", ".join(part for part in parts if part)


def _values(arm: dict[str, Any], getter) -> list[float]:
    values = []
    for run in arm["runs"].values():
        if run["complete"]:
            value = getter(run)
            if value is not None:
                values.append(float(value))
    return values


def epochs_to_target(run: dict[str, Any]) -> float | None:
    """The epochs a run of a study with a training-error target took to reach it; for a run
    that ended without reaching it, the epochs it trained (a lower bound, marked by
    `never_reached`: counting it keeps the slowest seeds in the mean, where leaving it out
    would make its arm look faster). None without a target."""
    if "epochs_to_target" not in run:
        return None
    return run["epochs"] if run["epochs_to_target"] is None else run["epochs_to_target"]


def never_reached(run: dict[str, Any]) -> bool:
    """A finished run that ended without reaching its study's training-error target."""
    return bool(run["complete"]) and "epochs_to_target" in run and run["epochs_to_target"] is None


# The paper's top-1 error that its effects acted on, by the dataset a study ran (as the records
# name it): for ImageNet (and its Imagenette subset) the one-CNN 37.5% on ILSVRC-2010 test (its
# Table 1): "ILSVRC-2010 is the only version of ILSVRC for which the test set labels are
# available, so this is the version on which we performed most of our experiments" (paper
# section 2; its 40.7% on ILSVRC-2012 val came later); for CIFAR-10 its net with LRN, 11% (3.3).
PAPER_BASE_ERROR = {"imagenet2012": 37.5, "imagenette": 37.5, "cifar10": 11.0}


def paper_base_error(results: dict[str, Any]) -> float | None:
    """The paper's error that its effects on a study's dataset acted on (None: not known)."""
    datasets = {(run.get("data") or {}).get("dataset") for arm in results.get("arms", {}).values()
                for run in arm.get("runs", {}).values()} - {None}
    return PAPER_BASE_ERROR.get(datasets.pop()) if len(datasets) == 1 else None


def relative_effect(paper_effect: float, baseline_error: float, paper_error: float) -> float:
    """The paper's effect (points of its `paper_error`) as the same fraction of our
    `baseline_error` (points): 1.4 points of 37.5% are 0.81 of 21.8%."""
    return paper_effect * baseline_error / paper_error


def _final(view: str, key: str):
    return lambda run: (run["final"].get(view) or {}).get(key)


def val_train_gap(run: dict[str, Any]) -> float | None:
    """Validation minus training top-1 error (fractions) of a run in results.json, the training
    images evaluated like the validation ones after the run; None if either is missing."""
    # the error logged while training has dropout and augmentation on: no measure of the fit
    top1, train = _final("val_1crop", "top1_error")(run), run.get("final_train_eval_error")
    return None if top1 is None or train is None else top1 - train


METRICS = {  # column -> (heading, getter)
    "top1": ("val top-1 error (centre)", _final("val_1crop", "top1_error")),
    "top5": ("val top-5 error (centre)", _final("val_1crop", "top5_error")),
    "top1_10": ("val top-1 error (10 views)", _final("val_10crop", "top1_error")),
    "top5_10": ("val top-5 error (10 views)", _final("val_10crop", "top5_error")),
    "train": ("train error (last epoch)", lambda run: run["final_train_error"]),
    "train_eval": ("train top-1 error (centre, after the run)",
                   lambda run: run.get("final_train_eval_error")),
}


def _points(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction


# what a block fit compares, in the units it reports: errors and the gap in points, epochs
FIT_GETTERS = {
    "top1": lambda run: _points(_final("val_1crop", "top1_error")(run)),
    # against the training images evaluated after the run: the error logged while training has
    # dropout on, which would favour the paper's direction
    "gap": lambda run: _points(val_train_gap(run)),
    # measures shown beside a claim's own (claims.Claim.beside)
    "top1_10": lambda run: _points(_final("val_10crop", "top1_error")(run)),
    "train_eval": lambda run: _points(run.get("final_train_eval_error")),
    # a run that never reached the target counts with its epochs: a lower bound, said beside it
    "epochs_to_target": epochs_to_target,
}


def compared_arms(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{name: arm} of a study's arms its block fits compare, finished runs or not: not a
    sweep's, nor one whose value its sweep has still to choose (its runs' protocol is not yet
    known)."""
    return {name: arm for name, arm in results.get("arms", {}).items()
            if not arm.get("sweep") and arm.get("chosen") is not False}


def fit_values(results: dict[str, Any], metric: str) -> dict[str, dict[str, float]]:
    """{arm: {seed: `metric`}} of the finished runs of every compared arm of a study that has
    any: what its block fits, the report's and the claims table's, compare."""
    getter = FIT_GETTERS[metric]
    found = {}
    for name, arm in compared_arms(results).items():
        values = {seed: float(value) for seed, run in arm.get("runs", {}).items()
                  if run.get("complete") and (value := getter(run)) is not None}
        if values:
            found[name] = values
    return found


def _data_facts(results: dict[str, Any]) -> dict[str, Any]:
    """The dataset facts of the first run that records them ({} when none does)."""
    for arm in results.get("arms", {}).values():
        for run in arm.get("runs", {}).values():
            if (run.get("data") or {}).get("eval_examples"):
                return run["data"]
    return {}


def eval_resolution(results: dict[str, Any]) -> float:
    """One validation image of an error in points (100 / the evaluation images the records
    name; 0 when none does): the smallest step a difference of errors can take."""
    examples = _data_facts(results).get("eval_examples")
    return 100.0 / examples if examples else 0.0


def metric_resolution(results: dict[str, Any], metric: str) -> float:
    """The smallest step a study's `metric` ("top1", "gap" or "epochs_to_target") can take:
    whole epochs (one training step where every run logged each step: report.running_crossing);
    one validation image of an error in points; for the val - train gap, one
    image of each of its two evaluations (the training images are all evaluated after the run),
    whose rounding errors add in variance. Seeds that agree exactly still carry this rounding
    spread (variance resolution^2 / 12, a uniform rounding error's), below which a block fit
    never takes its residual variance (else identical seeds would give an interval of width 0
    and p = 0)."""
    if metric == "epochs_to_target":   # whole epochs, or one step where every step was logged
        return max((run.get("target_resolution_epochs", 1.0)
                    for arm in results.get("arms", {}).values()
                    for run in arm.get("runs", {}).values()), default=1.0)
    val = eval_resolution(results)
    train_examples = _data_facts(results).get("train_examples")
    train = 100.0 / train_examples if train_examples else 0.0
    if metric == "train_eval":
        return train
    if metric != "gap":
        return val
    return (val ** 2 + train ** 2) ** 0.5
