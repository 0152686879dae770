"""``cipherfact deploy local`` shows progress while its agents run (it used to be
silent until they finished), and ``--quiet`` turns it off."""

from __future__ import annotations

from pathlib import Path

import pytest

from cipherfact.cli import main

TINY = ["n_agents=3", "topology.kind=complete", "crypto.scheme=none", "outer_iters=4",
        "inner_iters=2", "data.rows=8", "data.cols=24"]  # fmt: skip


@pytest.mark.grpc
@pytest.mark.parametrize("quiet", [False, True])
def test_deploy_local_progress_follows_the_agents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], quiet: bool
) -> None:
    args = ["deploy", "local", "ppdnmf-synthetic", "--agents", "3", "--out", str(tmp_path),
            *[a for item in TINY for a in ("--set", item)]]  # fmt: skip
    assert main(args + (["--quiet"] if quiet else [])) == 0
    err = capsys.readouterr().err
    assert ("ppdnmf over gRPC" in err) != quiet, err
    if not quiet:
        assert "4/4" in err  # the bar ends at the job's outer iterations
