"""Run a study (arms x seeds of ordinary runs, one after another) and report it.

    python experiments/run_study.py --study=configs/studies/<name>.py --dir=RUNS \
        [--record=docs/results/<name>] [--rounds=N] [--arms=A,B] [--config.<key>=<value> ...]
        [--report]

The --config.* overrides apply to every run of every arm. Running the command again resumes the
unfinished run and skips finished ones. With --record=REC each finished run's small files
(config.json, metrics.jsonl, run_complete.json; never checkpoints) are copied to
REC/<arm>/seed<k>/, and a run recorded there counts as finished even when RUNS is gone: commit
REC and the study continues in a later session on a fresh machine. A record made with another
config than the study would run now is refused, naming the differing keys.

After every run, and alone with --report, it writes results.json, results.md and results.png
(alexnet_jax/studies/report.py) into REC from the records alone, or without --record into RUNS.
--report --record=REC needs no RUNS (give it the study's --config.* arguments: the records are
checked against them). --rounds=N runs only the first N seeds of each arm (several
studies can then share a machine round by round: experiments/reproduce_studies.sh), and
--arms=A,B only those arms (the report still shows every recorded arm). The study
file format is described in alexnet_jax/studies/study.py. Long studies: run under
`nice -n 19`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alexnet_jax.common.errors import UserError  # noqa: E402
from alexnet_jax.studies import report as study_report  # noqa: E402
from alexnet_jax.studies import study as study_lib  # noqa: E402


def reproduce_command(study: str, runs: Path | None, record: Path | None,
                      rest: list[str], rounds: int | None = None,
                      arms: list[str] | None = None) -> str:
    """The command a report names to reproduce it, with the selection of runs it was given
    (--rounds, --arms). With a record directory, the same whoever runs it where: the usual run
    directory and the record's path in the repository (a report rebuilt elsewhere, or from a
    worktree whose record lies in another checkout, must not change); without one, as given."""
    study_path = Path(study)
    if study_path.is_absolute() and study_path.is_relative_to(REPO):
        study = str(study_path.relative_to(REPO))
    if record is not None:
        runs = Path("runs/studies") / Path(study).stem
        resolved = Path(record).resolve()
        if resolved.is_relative_to(REPO):
            record = resolved.relative_to(REPO)
        elif resolved.parts[-3:-1] == ("docs", "results"):
            record = Path(*resolved.parts[-3:])  # another checkout's docs/results
    selection = [*([f"--rounds={rounds}"] if rounds is not None else []),
                 *([f"--arms={','.join(arms)}"] if arms else [])]
    return " ".join(["python experiments/run_study.py", f"--study={study}",
                     f"--dir={runs or Path('runs/studies') / Path(study).stem}",
                     *([f"--record={record}"] if record else []), *selection,
                     *map(shlex.quote, rest)])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", required=True, help="a study file, configs/studies/<name>.py")
    parser.add_argument("--dir", type=Path, help="the study's run directory (workdirs with "
                        "checkpoints); not needed with --report --record")
    parser.add_argument("--record", type=Path, help="the record directory: finished runs' small "
                        "files and the report, meant to be committed (docs/results/<study>)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="run only the first N seeds of each arm (default: all)")
    parser.add_argument("--arms", type=lambda text: [name for name in text.split(",") if name],
                        default=None, help="run only these arms, comma-separated (and the "
                        "sweep runs their values are chosen from; default: all)")
    parser.add_argument("--report", action="store_true",
                        help="only write the report of what has run so far")
    args, rest = parser.parse_known_args(argv)
    unknown = [arg for arg in rest if not arg.startswith("--config.")]
    if unknown:
        parser.error(f"unexpected arguments {unknown}; overrides are --config.<key>=<value>")
    if args.dir is None and not (args.report and args.record):
        parser.error("--dir=RUNS is needed (only --report --record=REC reads records alone)")
    command = reproduce_command(args.study, args.dir, args.record, rest, args.rounds, args.arms)
    dirs = study_lib.StudyDirs(args.dir, args.record)
    try:
        study = study_lib.load_study(args.study)
        if args.report:
            code = 0
        else:
            code = study_lib.run_study(
                study, dirs, rest, study_report.final_train_error,
                after_each_run=lambda: study_report.write_report(study, dirs, command, rest),
                rounds=args.rounds, arms=args.arms)
        study_report.write_report(study, dirs, command, rest)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report: {dirs.report / study_report.RESULTS_MD}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
