"""The README's claims table from the recorded studies (alexnet_jax/studies/claims.py).

    python experiments/claims_table.py                  # print it
    python experiments/claims_table.py --write README.md  # replace it between the markers
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
    parser.add_argument("--write", type=Path, help="a file holding the two markers")
    args = parser.parse_args()
    table = claims.table(args.results)
    if not args.write:
        print(table, end="")
        return 0
    text = args.write.read_text()
    if START not in text or END not in text:
        print(f"error: {args.write} lacks the markers {START} and {END}", file=sys.stderr)
        return 2
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    args.write.write_text(f"{before}{START}\n{table}{END}{after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
