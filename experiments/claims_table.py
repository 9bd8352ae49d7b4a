"""The README's claims tables from the recorded studies (alexnet_jax/studies/claims.py): the
claims at convergence between <!-- claims:start --> and <!-- claims:end -->, the 128-pixel
claims after 7 epochs between <!-- claims-early:start --> and <!-- claims-early:end -->, and
the 128-pixel claims' verdicts early and at convergence side by side between
<!-- claims-compare:start --> and <!-- claims-compare:end -->.

    python experiments/claims_table.py                  # print all three
    python experiments/claims_table.py --write README.md  # replace them between the markers
    python experiments/claims_table.py --check README.md  # exit 1 if they are not what --write writes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alexnet_jax.common.errors import UserError  # noqa: E402
from alexnet_jax.studies import claims  # noqa: E402
from experiments.generated_tables import write_or_check  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("docs/results"),
                        help="the folder holding each study's record folder "
                        "(<results>/<study>/results.json, as run_study.py --record writes "
                        "them); default docs/results")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--write", type=Path, help="a file holding the markers")
    target.add_argument("--check", type=Path, help="a file whose tables should be up to date")
    args = parser.parse_args()
    try:
        claims.check_results_root(args.results)
        tables = claims.tables(args.results)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    path = args.write or args.check
    if not path:
        print("\n".join(tables.values()), end="")
        return 0
    command = "python experiments/claims_table.py" + (
        f" --results {args.results}" if args.results != Path("docs/results") else "")
    return write_or_check(path, tables, bool(args.check), command)


if __name__ == "__main__":
    sys.exit(main())
