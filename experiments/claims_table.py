"""The claims tables from the recorded studies (alexnet_jax/studies/claims_tables.py), each
between its marker comments (<!-- NAME:start --> and <!-- NAME:end -->) in its page: the
README's summary (claims-summary: one row a claim), and docs/results.md's full tables (claims:
at convergence; claims-early: the 128-pixel claims after 7 epochs; claims-compare: the two side
by side).

    python experiments/claims_table.py            # print every table
    python experiments/claims_table.py --write    # replace them in README.md and docs/results.md
    python experiments/claims_table.py --check    # exit 1 if either is not what --write writes
    python experiments/claims_table.py --check README.md   # one page (or a copy of it)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alexnet_jax.common.errors import UserError  # noqa: E402
from alexnet_jax.studies import claims, claims_tables  # noqa: E402
from experiments.generated_tables import write_or_check  # noqa: E402


def page_tables(path: Path, tables: dict[str, str]) -> dict[str, str]:
    """The tables that go into `path`, by its name (README.md or results.md, wherever it is)."""
    for page, names in claims_tables.PAGES.items():
        if path.name == Path(page).name:
            return {name: tables[name] for name in names}
    raise UserError(f"{path} is none of the pages the claims tables go to "
                    f"({', '.join(claims_tables.PAGES)}).")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("docs/results"),
                        help="the folder holding each study's record folder "
                        "(<results>/<study>/results.json, as run_study.py --record writes "
                        "them); default docs/results")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--write", type=Path, nargs="*", metavar="PAGE",
                        help="write the tables into these pages (default: "
                        f"{' and '.join(claims_tables.PAGES)})")
    target.add_argument("--check", type=Path, nargs="*", metavar="PAGE",
                        help="exit 1 when a page's tables are not current (default: both)")
    args = parser.parse_args()
    paths = args.write if args.write is not None else args.check
    try:
        claims.check_results_root(args.results)
        tables = claims_tables.tables(args.results)
        if paths is not None:
            pages = {path: page_tables(path, tables)
                     for path in paths or [Path(page) for page in claims_tables.PAGES]}
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if paths is None:
        print("\n".join(tables.values()), end="")
        return 0
    command = "python experiments/claims_table.py" + (
        f" --results {args.results}" if args.results != Path("docs/results") else "")
    return max(write_or_check(path, page, args.check is not None, command)
               for path, page in pages.items())


if __name__ == "__main__":
    sys.exit(main())
