"""One progress bar style for every long run: on stderr, named fields, log-friendly.

On a terminal the bar redraws in place. Redirected to a file (a batch job, CI),
tqdm would write a new line at every update, so the bar refreshes at most every
``LOG_INTERVAL_S`` seconds there: a long run still shows it is alive, and the
log stays readable.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


def progress_bar(total: int, desc: str, unit: str, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr (disabled when ``enabled`` is false)."""
    tty = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        file=sys.stderr,
        mininterval=0.1 if tty else LOG_INTERVAL_S,
        maxinterval=10.0 if tty else LOG_INTERVAL_S * 4,
        **kwargs,
    )
