"""The documents a newcomer reads first keep up with the code: README's folder table names every
package and top-level module of `anubis_dagster/`, and `benchmarks/README.md` says how to run
every benchmark script. A new module or script without its line fails here, not in review."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "anubis_dagster"


def _readme_folder_entries() -> set[str]:
    """The first cell of every row of README's `| folder | what lives there |` table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("| folder | what lives there |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE))


def _layout() -> set[str]:
    """Every top-level module and package of `anubis_dagster/`, spelled as the table does."""
    names = {f"anubis_dagster/{p.name}" for p in PACKAGE.glob("*.py")}
    names |= {f"anubis_dagster/{p.parent.name}/" for p in PACKAGE.glob("*/__init__.py")}
    return names


def test_readme_folder_table_names_every_package_and_top_level_module() -> None:
    entries = _readme_folder_entries()
    covered = {e for e in entries if e.startswith("anubis_dagster/")}
    # A package's rows may name a file inside it (e.g. `config/integrations.yaml`) or the
    # pattern of its sub-packages (`integrations/<ies>/`): the package row itself must exist.
    missing = sorted(_layout() - covered)
    assert not missing, f"README's folder table has no line for {missing}"


def test_benchmarks_readme_covers_every_script() -> None:
    readme = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    headed = set(re.findall(r"^## `(\w+\.py)`", readme, flags=re.MULTILINE))
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*_bench.py")}
    assert scripts - headed == set(), f"benchmarks/README.md has no section for {scripts - headed}"


def test_benchmarks_md_links_resolve() -> None:
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert links, "BENCHMARKS.md links to the benchmarks' README and their history"
    assert [link for link in links if not (ROOT / link).exists()] == []
