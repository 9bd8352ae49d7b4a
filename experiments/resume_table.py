"""docs/reliability.md's resume table from the resume policy (alexnet_jax/training/resume_policy.py),
between <!-- resume-policy:start --> and <!-- resume-policy:end -->.

    python experiments/resume_table.py                       # print it
    python experiments/resume_table.py --write docs/reliability.md
    python experiments/resume_table.py --check docs/reliability.md  # exit 1 if out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alexnet_jax.training import resume_policy  # noqa: E402
from experiments.generated_tables import write_or_check  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--write", type=Path, help="a file holding the markers")
    target.add_argument("--check", type=Path, help="a file whose table should be up to date")
    args = parser.parse_args()
    table = resume_policy.table_markdown()
    path = args.write or args.check
    if not path:
        print(table, end="")
        return 0
    return write_or_check(path, {"resume-policy": table}, bool(args.check),
                          "python experiments/resume_table.py")

if __name__ == "__main__":
    sys.exit(main())
