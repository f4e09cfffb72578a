"""The option tables in docs/*.md are what ``python -m omnivis.commands.docs`` generates."""

from __future__ import annotations

from omnivis.commands.docs import DOCS, config_commands, documented_commands, render, stale_docs


def test_option_tables_are_up_to_date():
    stale = stale_docs()
    assert not stale, f"out of date: {', '.join(p.name for p in stale)}; run python -m omnivis.commands.docs"


def test_every_config_command_has_a_table():
    assert set(config_commands()) <= set(documented_commands())


def test_a_table_lists_each_option_once_with_its_default():
    table = render("<!-- options:train segment -->\n<!-- /options -->\n")
    assert "| `--epochs` | `trainer.epochs` | none |" in table
    assert "| `--hflip/--no-hflip` | `augment.hflip` | none |" in table
    assert "| `--scale-min` | `augment.scale_min` | 0.5 |" in table
    assert "| `--out` | - | required |" in table
    rows = [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| `--")]
    assert len(rows) == len(set(rows))


def test_docs_folder_is_the_repositorys():
    assert (DOCS / "classify.md").exists()
