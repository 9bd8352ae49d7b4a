"""The README's claims table from the recorded studies (alexnet_jax/studies/claims.py).

    python experiments/claims_table.py                  # print it
    python experiments/claims_table.py --write README.md  # replace it between the markers
    python experiments/claims_table.py --check README.md  # exit 1 if it is not what --write writes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alexnet_jax.studies import claims  # noqa: E402

START, END = "<!-- claims:start -->", "<!-- claims:end -->"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("docs/results"))
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--write", type=Path, help="a file holding the two markers")
    target.add_argument("--check", type=Path, help="a file whose table should be up to date")
    args = parser.parse_args()
    table = claims.table(args.results)
    path = args.write or args.check
    if not path:
        print(table, end="")
        return 0
    text = path.read_text()
    if START not in text or END not in text:
        print(f"error: {path} lacks the markers {START} and {END}", file=sys.stderr)
        return 2
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    updated = f"{before}{START}\n{table}{END}{after}"
    if args.check:
        if updated == text:
            return 0
        print(f"error: the claims table in {path} is not the one {args.results} gives; run "
              f"python experiments/claims_table.py --write {path}", file=sys.stderr)
        return 1
    path.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
