"""Progress bars in one style for every phase longer than a few seconds (training, preparing a
dataset, statistics, evaluation)."""

from __future__ import annotations

import sys

from tqdm import tqdm


# a bar whose caller shows its own estimate of the time left (in the postfix)
OWN_ESTIMATE = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


def progress_bar(total: int | None, description: str, unit: str, initial: int = 0,
                 enabled: bool = True, bar_format: str | None = None) -> tqdm:
    """A tqdm bar on stderr. Redirected to a file, a bar redrawn every step appends a line per
    step (the CIFAR-10 run's log grew to 2.4 MB of them): there it is redrawn once a minute."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=description, unit=unit, dynamic_ncols=True,
                disable=not enabled, mininterval=0.1 if interactive else 60.0,
                bar_format=bar_format)
