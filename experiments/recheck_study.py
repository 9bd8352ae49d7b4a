"""Does today's code reproduce a recorded study? A recheck record's runs against the study's.

    python experiments/recheck_study.py --study-record docs/results/imagenette128_converged \
        --recheck-record docs/results/imagenette128_converged_today [--arm baseline]

Prints, for the validation error (centre crop and 10 views) and the training images' error
after the run: the recorded seeds, their 95% prediction interval for one more seed, the
recheck's value, and whether it lies within the seeds' range and the interval
(alexnet_jax/studies/recheck.py). Each record's results.json is written by run_study.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alexnet_jax.studies import recheck  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study-record", type=Path, required=True)
    parser.add_argument("--recheck-record", type=Path, required=True)
    parser.add_argument("--arm", default="baseline")
    args = parser.parse_args()
    recorded, rechecked = (json.loads((path / "results.json").read_text())
                           for path in (args.study_record, args.recheck_record))
    checks = [recheck.recheck(recorded, rechecked, args.arm, metric)
              for metric in recheck.RECHECKED_METRICS]
    print(recheck.markdown(checks, recheck.commits(recorded, args.arm),
                           recheck.commits(rechecked, args.arm)))


if __name__ == "__main__":
    main()
