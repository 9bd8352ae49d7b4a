"""Run a study (arms x seeds of ordinary runs, one after another) and report it.

    python experiments/run_study.py --study=configs/studies/<name>.py --dir=DIR \
        [--config.<key>=<value> ...] [--report]

The --config.* overrides apply to every run of every arm. Running the command again resumes the
unfinished run and skips finished ones. After every run, and alone with --report, it writes
DIR/results.json, DIR/results.md and DIR/results.png (alexnet_jax/study_report.py). The study
file format is described in alexnet_jax/study.py. Long studies: run under `nice -n 19`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alexnet_jax import study as study_lib  # noqa: E402
from alexnet_jax import study_report  # noqa: E402
from alexnet_jax.errors import UserError  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, help="a study file, configs/studies/<name>.py")
    parser.add_argument("--dir", required=True, type=Path, help="the study's directory")
    parser.add_argument("--report", action="store_true",
                        help="only write the report of what has run so far")
    args, rest = parser.parse_known_args(argv)
    unknown = [arg for arg in rest if not arg.startswith("--config.")]
    if unknown:
        parser.error(f"unexpected arguments {unknown}; overrides are --config.<key>=<value>")
    command = " ".join(["python experiments/run_study.py", f"--study={args.study}",
                        f"--dir={args.dir}", *map(shlex.quote, rest)])
    try:
        study = study_lib.load_study(args.study)
        if args.report:
            code = 0
        else:
            code = study_lib.run_study(
                study, args.dir, rest, study_report.final_train_error,
                after_each_run=lambda: study_report.write_report(study, args.dir, command))
        study_report.write_report(study, args.dir, command)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report: {args.dir / study_report.RESULTS_MD}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
