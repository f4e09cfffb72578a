"""The option tables of docs/*.md, generated from the commands (so from the config dataclasses).

A table sits between two markers naming its command::

    <!-- options:train classify -->
    | option | config field | default | meaning |
    ...
    <!-- /options -->

``python -m omnivis.commands.docs`` rewrites every such table under ``docs/``; ``--check`` only
reports the tables that differ (exit status 1), as the test suite does.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import typer

from omnivis.commands.options import ConfigCommand, ConfigOption

DOCS = Path(__file__).resolve().parents[3] / "docs"
MARKERS = re.compile(
    r"(?P<open><!-- options:(?P<command>[a-z][a-z -]*?) -->\n)(?P<table>.*?)(?P<close><!-- /options -->)", re.S)


def commands() -> Iterator[tuple[str, Any]]:
    """(``train classify``, click command) for every command of the ``omnivis`` app."""
    from omnivis.cli import app

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            yield " ".join(path), command
            return
        for name, sub in subcommands.items():
            yield from walk(sub, (*path, name))

    yield from walk(typer.main.get_command(app), ())


def config_commands() -> dict[str, ConfigCommand]:
    """The commands whose options come from a config dataclass, by name (``train classify``, ``pretrain`` ...)."""
    return {name: command for name, command in commands() if isinstance(command, ConfigCommand)}


def markdown_text(text: str) -> str:
    """Docstring or help text for a table cell: ````x```` -> ```x```, pipes escaped, one line."""
    text = re.sub(r"``(.+?)``", r"`\1`", " ".join(text.split()))
    return text.replace("|", "\\|")


def markdown_default(value: Any, *, required: bool = False) -> str:
    if required:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        value = ",".join(value)
    return f"`{value}`" if str(value) else '`""`'


def options_table(command: Any) -> str:
    """The markdown table of ``command``'s options (help excluded), in the order ``--help`` lists them."""
    derived: dict[str, ConfigOption] = {}
    if isinstance(command, ConfigCommand):
        derived = {option.dest: option for option in command.config_options()}
    rows = ["| option | config field | default | meaning |", "|---|---|---|---|"]
    for param in command.params:
        if param.name == "help" or getattr(param, "hidden", False):
            continue
        option = derived.get(param.name)
        if option is not None:
            default = markdown_default(option.default, required=option.required)
            rows.append(f"| `{option.flag}` | `{option.key}` | {default} | {markdown_text(option.help)} |")
            continue
        names = "/".join([*param.opts, *param.secondary_opts])
        rows.append(f"| `{names}` | - | {markdown_default(param.default, required=param.required)}"
                    f" | {markdown_text(param.help or '')} |")
    return "\n".join(rows) + "\n"


def render(text: str, where: str = "markdown") -> str:
    """``text`` with every marked table regenerated; an unknown command is a ``ValueError``."""
    known = dict(commands())

    def table(match: re.Match) -> str:
        name = match["command"].strip()
        if name not in known:
            raise ValueError(f"{where}: <!-- options:{name} --> names no omnivis command")
        return match["open"] + options_table(known[name]) + match["close"]

    return MARKERS.sub(table, text)


def documented_commands(docs: Path = DOCS) -> dict[str, Path]:
    """Command name -> the doc whose marked table shows its options."""
    found: dict[str, Path] = {}
    for path in sorted(docs.glob("*.md")):
        for match in MARKERS.finditer(path.read_text()):
            found[match["command"].strip()] = path
    return found


def stale_docs(docs: Path = DOCS) -> list[Path]:
    """The docs whose marked tables differ from what the commands give."""
    return [path for path in sorted(docs.glob("*.md")) if render(text := path.read_text(), str(path)) != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omnivis.commands.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=DOCS, help="the docs folder (default: the repository's)")
    parser.add_argument("--check", action="store_true", help="only report stale tables (exit status 1)")
    args = parser.parse_args(argv)
    stale = stale_docs(args.docs)
    for path in stale:
        if args.check:
            print(f"{path}: option tables are out of date; run python -m omnivis.commands.docs")
        else:
            path.write_text(render(path.read_text(), str(path)))
            print(f"updated {path}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
