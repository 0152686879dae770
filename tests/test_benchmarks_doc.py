"""BENCHMARKS.md is what ``benchmarks/assemble.py`` makes of ``benchmarks/results/``.

Sections once written straight into BENCHMARKS.md were lost the next time it was
assembled; this keeps the two from drifting apart again.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmarks_md_is_the_assembled_results() -> None:
    spec = importlib.util.spec_from_file_location("assemble", ROOT / "benchmarks" / "assemble.py")
    assert spec is not None and spec.loader is not None
    assemble = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(assemble)
    expected = assemble.assemble()
    actual = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert actual == expected, (
        "BENCHMARKS.md differs from benchmarks/results/*.md: edit the results files, "
        "then run `python benchmarks/assemble.py`"
    )
