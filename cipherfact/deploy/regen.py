"""Regenerate the committed protobuf/gRPC code and check that nothing changed.

The generated ``*_pb2*.py`` files are committed so that a deployment needs no
code generator; this check (run by the tests and by hand with
``python -m cipherfact.deploy.regen --check``) proves they are exactly what the
``.proto`` files produce with the installed grpcio-tools.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROTOS = ("cipherfact/deploy/envelope_v1.proto", "cipherfact/deploy/health_v1.proto")


def repo_root() -> Path:
    """The folder that holds the ``cipherfact`` package (protoc's include path)."""
    return Path(__file__).resolve().parents[2]


def generate(out_dir: Path, root: Path | None = None) -> list[Path]:
    """Run protoc on the committed ``.proto`` files into ``out_dir``; returns the files."""
    root = root or repo_root()
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{root}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--pyi_out={out_dir}",  # type stubs, so mypy checks the code using the messages
        *(str(root / p) for p in PROTOS),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"protoc failed ({proc.returncode}): {proc.stderr.strip()}")
    return sorted([*out_dir.rglob("*_pb2*.py"), *out_dir.rglob("*_pb2*.pyi")])


def stale_files(root: Path | None = None) -> list[str]:
    """Generated files whose committed copy differs from a fresh generation."""
    root = root or repo_root()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        fresh = generate(out, root)
        if not fresh:
            raise RuntimeError("protoc produced no files")
        stale = []
        for path in fresh:
            rel = path.relative_to(out)
            committed = root / rel
            if not committed.is_file() or committed.read_bytes() != path.read_bytes():
                stale.append(str(rel))
        return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report differences")
    args = parser.parse_args(argv)
    root = repo_root()
    if args.check:
        stale = stale_files(root)
        for name in stale:
            print(f"stale generated file: {name}", file=sys.stderr)
        return 1 if stale else 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp), root):
            shutil.copyfile(path, root / path.relative_to(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
