"""The README and the manual in docs/: every relative link resolves, the site builds without a
warning, the module map names every module, and the README's headline figures are the ones
benchmarks/RESULTS.md shows."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "benchmarks" / "README.md",
                ROOT / "benchmarks" / "RESULTS.md"])
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def prose(text: str) -> str:
    """Markdown without code blocks and inline code, where link syntax is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub (and MkDocs' toc) gives a heading."""
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"\s", "-", text)


def anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*$", FENCE.sub("", page.read_text()), re.M)
    return {slug(heading) for heading in headings}


def relative_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(prose(page.read_text()))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto: are not checked here


def test_the_pages_have_links_to_check() -> None:
    assert (ROOT / "mkdocs.yml").exists()
    assert len(PAGES) >= 16
    assert len(relative_links(ROOT / "README.md")) >= 20


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {destination.name}")
    assert not broken, f"broken links in {page.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_the_site_builds_without_warnings(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        print("mkdocs is not installed (pip install 'inbedder-index[docs]'): the site build is not checked")
        pytest.skip("mkdocs is not installed: pip install 'inbedder-index[docs]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner about its future
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert not re.search(r"^(WARNING|ERROR)\b", output, re.M), output
    assert (tmp_path / "site" / "search" / "index.html").exists()
    assert "search_combined" in (tmp_path / "site" / "search" / "index.html").read_text()


def test_the_module_map_names_every_module() -> None:
    """docs/architecture.md keeps the tree's picture true: a new module gets its line there."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    package = ROOT / "inbedder_index"
    missing = []
    for module in sorted(package.rglob("*.py")):
        relative = module.relative_to(package)
        if module.name.startswith("_") or "data" in relative.parts:
            continue
        if len(relative.parts) == 1:
            named = f"`inbedder_index/{module.name}`" in page
        else:
            row = next((line for line in page.splitlines() if f"`inbedder_index/{relative.parts[0]}/`" in line), "")
            named = f"`{module.name}`" in row or f"`{module.stem}`" in row
        if not named:
            missing.append(str(relative))
    assert not missing, f"docs/architecture.md does not name these modules; add them to its module map: {missing}"


def test_the_readme_headline_figures_come_from_the_results_page() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- headline-figures", 1)[1].split("\n## ", 1)[0]
    rows = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    figures = re.findall(r"\d+\.\d+\s?(?:x|ms|%)?|\d+(?:x|%)", rows)
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert len(figures) >= 10
    missing = [figure for figure in figures if figure not in results]
    assert not missing, f"README headline figures not on benchmarks/RESULTS.md (rerun the report or fix them): {missing}"
