"""`anubis --help` names every command (issue 23): its summary is the module docstring, and a
command added to the parser without a summary line fails here."""

from __future__ import annotations

import argparse

from anubis_dagster import cli


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> set[tuple[str, ...]]:
    """Every registered command path: ('status',), ('shadow', 'on'), ('legacy', 'import')..."""
    found: set[tuple[str, ...]] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                path = (*prefix, name)
                nested = _commands(child, path)
                found |= nested or {path}
    return found


def _summarised(summary: str) -> set[tuple[str, ...]]:
    """The command paths the summary's `anubis ...` lines show (`on|off` names both)."""
    shown: set[tuple[str, ...]] = set()
    for line in summary.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "anubis":
            continue
        shown.add((words[1],))
        if len(words) > 2 and words[2].replace("|", "").replace("-", "").isalpha():
            shown |= {(words[1], part) for part in words[2].split("|")}
    return shown


def test_the_help_summary_names_every_registered_command() -> None:
    parser = cli.build_parser()
    commands = _commands(parser)
    assert ("student",) in commands and ("shadow", "report") in commands  # the walk finds them
    summary = parser.description or ""
    missing = sorted(" ".join(c) for c in commands - _summarised(summary))
    assert not missing, f"anubis --help does not summarise: {missing}"
    assert summary in parser.format_help()
