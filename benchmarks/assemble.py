"""Assemble BENCHMARKS.md from the per-area results in benchmarks/results/.

Each results file is written by hand or by its benchmark script, with the
exact command and machine at the top of each table; this script only puts
them in order under one title:

    python benchmarks/assemble.py   # rewrites BENCHMARKS.md
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = [
    "crypto",
    "solvers",
    "ppdnmf",
    "quickstart",
    "soak",
    "ray",
    "recsys",
    "grpc",
    "bench_protocols",
    "csr_bytes",
]
HEADER = """# Benchmarks

Every figure below comes from a run on this project's development machine (a
2-core AMD EPYC VM with 24 GB, shared with other jobs unless a section says
otherwise), with the exact command above its table. Ratios are measured in
the same run. This file is assembled from `benchmarks/results/*.md` by
`python benchmarks/assemble.py`; edit those files, not this one.

The development machine has no GPU; the torch-cuda solver rows and the `gpu`
tests were run once on a lent NVIDIA H200 (see "On an NVIDIA H200").
"""


def demote_headings(text: str) -> str:
    """One more '#' on every Markdown heading outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        out.append("#" + line if line.startswith("#") and not fenced else line)
    return "\n".join(out)


def assemble() -> str:
    """BENCHMARKS.md's text from the results files, in ``ORDER`` then by name."""
    parts = [HEADER]
    results = ROOT / "benchmarks" / "results"
    names = ORDER + sorted(p.stem for p in results.glob("*.md") if p.stem not in ORDER)
    for name in names:
        path = results / f"{name}.md"
        if path.exists():
            text = path.read_text(encoding="utf-8").strip()
            parts.append(demote_headings(text))
    return "\n\n".join(parts) + "\n"


def main() -> None:
    (ROOT / "BENCHMARKS.md").write_text(assemble(), encoding="utf-8")


if __name__ == "__main__":
    main()
