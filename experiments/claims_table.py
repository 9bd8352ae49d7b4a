"""The README's claims tables from the recorded studies (alexnet_jax/studies/claims.py): the
claims at convergence between <!-- claims:start --> and <!-- claims:end -->, the 128-pixel
claims after 7 epochs between <!-- claims-early:start --> and <!-- claims-early:end -->.

    python experiments/claims_table.py                  # print both
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


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def with_tables(text: str, tables: dict[str, str], path: Path) -> str:
    """`text` with each table put between its markers; UserError when a marker is missing."""
    for name, table in tables.items():
        start, end = markers(name)
        if start not in text or end not in text:
            raise UserError(f"{path} lacks the markers {start} and {end}, between which the "
                            f"table {name!r} goes.")
        before, rest = text.split(start, 1)
        text = f"{before}{start}\n{table}{end}{rest.split(end, 1)[1]}"
    return text


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
        tables = {name: claims.table(args.results, name) for name in claims.TABLES}
        path = args.write or args.check
        if not path:
            print("\n".join(tables.values()), end="")
            return 0
        text = path.read_text()
        updated = with_tables(text, tables, path)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        if updated == text:
            return 0
        print(f"error: the claims tables in {path} are not the ones {args.results} gives; run "
              f"python experiments/claims_table.py --write {path}", file=sys.stderr)
        return 1
    path.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
