"""``cipherfact scenario list|show|reference``: what the scenarios hold, before running one.

``show`` prints a scenario with every field resolved (bundled values, ``--set``
overrides and defaults) as TOML that ``cipherfact simulate`` reads back;
``reference`` prints the field reference (docs/scenario-reference.md).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

__all__ = ["add_subcommands"]


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scenario",
        help="list the bundled scenarios, print one fully resolved, print the field reference",
        description="Inspect scenarios without running them. Field reference: "
        "docs/scenario-reference.md (or `cipherfact scenario reference`).",
    )
    scenario_sub = p.add_subparsers(dest="scenario_command", required=True)
    lister = scenario_sub.add_parser("list", help="the bundled scenarios, one line each")
    lister.set_defaults(func=_run_list)
    show = scenario_sub.add_parser(
        "show",
        help="print a scenario with every field resolved, as TOML",
        description="Print the scenario NAME (bundled name or TOML file) with the --set "
        "overrides applied and every field filled in, as TOML: save it, edit it and run it "
        "with `cipherfact simulate FILE.toml`. Unset optional fields appear as comments.",
    )
    show.add_argument("scenario", help="bundled scenario name or path to a .toml file")
    show.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario field, as for simulate (repeatable)",
    )
    show.set_defaults(func=_run_show)
    reference = scenario_sub.add_parser(
        "reference", help="print the field reference (Markdown) of every protocol"
    )
    reference.set_defaults(func=_run_reference)


def _description(name: str) -> str:
    """The first comment line of a bundled scenario file."""
    from importlib import resources

    text = (resources.files("cipherfact.simulations") / "scenarios" / f"{name}.toml").read_text(
        encoding="utf-8"
    )
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    words = " ".join(lines)
    end = words.find(". ")
    return words if end < 0 else words[: end + 1]


def _run_list(_args: argparse.Namespace) -> int:
    from cipherfact.simulations.scenario import bundled_scenarios, load_scenario

    names = bundled_scenarios()
    width = max(len(n) for n in names)
    for name in names:
        protocol = load_scenario(name).protocol
        print(f"{name:<{width}}  {protocol:<10}  {_description(name)}")
    print(
        "\ncipherfact scenario show NAME [--set k=v ...] prints every field; "
        "docs/scenario-reference.md explains them.",
        file=sys.stderr,
    )
    return 0


def _run_show(args: argparse.Namespace) -> int:
    from cipherfact.simulations.scenario import load_scenario
    from cipherfact.simulations.scenario_reference import scenario_toml

    scenario: Any = load_scenario(args.scenario, args.overrides)
    command = " ".join(
        ["cipherfact scenario show", shlex.quote(args.scenario)]
        + [f"--set {shlex.quote(o)}" for o in args.overrides]
    )
    header = (
        f"{command}\n"
        f"protocol {scenario.protocol}: every field resolved (file, --set, defaults).\n"
        "Run it: cipherfact simulate THIS_FILE.toml; fields: docs/scenario-reference.md"
    )
    sys.stdout.write(scenario_toml(scenario, header))
    return 0


def _run_reference(_args: argparse.Namespace) -> int:
    from cipherfact.simulations.scenario_reference import reference_markdown

    sys.stdout.write(reference_markdown())
    return 0
