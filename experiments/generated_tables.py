"""Tables generated into Markdown files between markers (<!-- NAME:start --> ... <!-- NAME:end -->):
the claims tables of the README and docs/results.md (claims_table.py) and docs/reliability.md's
resume table (resume_table.py). One way to write them and to check that a file holds what they
generate."""

from __future__ import annotations

import sys
from pathlib import Path

from alexnet_jax.common.errors import UserError


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


def write_or_check(path: Path, tables: dict[str, str], check: bool, command: str) -> int:
    """Write the tables into `path` (exit code 0), or with `check` only compare: 0 when the
    file holds them, else 1 with the `command` that writes them; 2 for a file without the
    markers."""
    text = path.read_text()
    try:
        updated = with_tables(text, tables, path)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if check:
        if updated == text:
            return 0
        print(f"error: the generated tables in {path} are out of date; run {command} --write "
              f"{path}", file=sys.stderr)
        return 1
    path.write_text(updated)
    return 0
