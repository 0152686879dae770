"""The README's inline commands exist as written: every `cipherfact ...` span in its
prose parses with the real command line, and every scenario it names loads.
(Its bash blocks are checked in tests/simulations/test_ray_cluster.py; its Python
blocks run in test_estimator.py and test_ratings_model.py; the main command runs
in the slow test below.)"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cipherfact.cli import build_parser
from cipherfact.simulations.scenario import load_scenario

README = Path(__file__).resolve().parents[1] / "README.md"


def _inline_commands() -> list[list[str]]:
    """Inline spans that are whole commands (not a bare "`cipherfact simulate`"
    mention or a synopsis with [optional] parts)."""
    spans = re.findall(r"`(cipherfact [^`]+)`", README.read_text(encoding="utf-8"))
    placeholders = {"ID": "3", "N": "4"}  # the README's names for numbers
    commands = [
        [placeholders.get(w, w) for w in shlex.split(s)]
        for s in spans
        if "..." not in s and "[" not in s
    ]
    return [
        w
        for w in commands
        if len(w) >= 3 and (w[1] in ("simulate", "scenario") or any(x.startswith("--") for x in w))
    ]


def test_readme_inline_commands_parse_and_name_real_scenarios() -> None:
    commands = _inline_commands()
    assert len(commands) >= 10, commands
    for words in commands:
        args = build_parser(words[1:]).parse_args(words[1:])
        if words[1] == "simulate":
            load_scenario(args.scenario, args.overrides)  # a bundled name or protocol


@pytest.mark.slow
def test_readme_main_command_as_written(tmp_path: Path) -> None:
    """The first screen's run command, unchanged (about 6 minutes on 2 cores)."""
    block = README.read_text(encoding="utf-8").split("```bash", 1)[1].split("```", 1)[0]
    line = next(x for x in block.splitlines() if x.startswith("cipherfact simulate"))
    words = shlex.split(line)
    proc = subprocess.run([sys.executable, "-m", "cipherfact", *words[1:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / words[words.index("--out") + 1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rel_error_gap"] < 0.05
