"""Every heading that code or docs cite exists, and every relative link of the docs leads
to a file.

A citation names a Markdown file and one of its headings: `RESULTS.md, "Training
throughput"` (file, comma, heading in double quotes; the quotes may start on the next
comment line). The file is looked up from the repository root, then beside the citing
file. The heading matches a heading of that file exactly, or its start up to a colon, a
comma or a parenthesis (`"Two ranks on 2 cores"` cites `## Two ranks on 2 cores: weak
scaling (...)`). In Markdown, `(see "Heading")` cites a heading of the same file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
CITING_SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".md", ".ipynb", ".sbatch", ".pbs", ".cfg", ".toml"}
# Not part of the repository: hidden directories (.git, .venv) and git-ignored outputs.
IGNORED_DIRS = {"work", "runs", "build", "__pycache__"}

CITATION = re.compile(r'([\w./-]+\.md),\s*(?:#\s*)?"([^"]{1,120})"')
LINE_BREAK = re.compile(r"\s*\n\s*(?:#\s*)?")  # a heading wrapped onto the next comment line
SAME_FILE = re.compile(r'\(see "([^"\n]+)"')
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def repository_files(suffixes: set[str]) -> list[Path]:
    found = []
    for directory, subdirectories, files in os.walk(REPO):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".") and d not in IGNORED_DIRS]
        found += [Path(directory) / name for name in files if Path(name).suffix in suffixes]
    return sorted(found)


def text_of(path: Path) -> str:
    """The text a reader sees: a notebook's cell sources, any other file as it is."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        cells = json.loads(text)["cells"]
        return "\n".join("".join(cell["source"]) for cell in cells)
    return text


def prose_lines(markdown: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    lines, in_code = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code:
            lines.append(line)
    return lines


def headings(path: Path) -> list[str]:
    return [m.group(1) for line in prose_lines(path.read_text(encoding="utf-8"))
            if (m := HEADING.match(line))]


def heading_matches(cited: str, heading: str) -> bool:
    return heading == cited or (heading.startswith(cited)
                                and heading[len(cited):].startswith((":", ",", " (")))


def citations(text: str, citing: Path) -> list[tuple[str, str]]:
    """(file, heading) of every citation in `text`, written in the file `citing`."""
    found = [(m.group(1), LINE_BREAK.sub(" ", m.group(2))) for m in CITATION.finditer(text)]
    if citing.suffix == ".md":
        found += [(citing.name, m.group(1)) for m in SAME_FILE.finditer(text)]
    return found


def cited_file(name: str, citing: Path) -> Path | None:
    for candidate in (REPO / name, citing.parent / name):
        if candidate.is_file():
            return candidate
    return None


def broken_citations(text: str, citing: Path) -> list[str]:
    """One line per citation in `text` whose file or heading does not exist."""
    broken = []
    for name, heading in citations(text, citing):
        target = cited_file(name, citing)
        if target is None:
            broken.append(f'{citing}: {name}, "{heading}": no such file')
        elif not any(heading_matches(heading, h) for h in headings(target)):
            broken.append(f'{citing}: {name}, "{heading}": no such heading in {target}')
    return broken


def broken_links(markdown: str, citing: Path) -> list[str]:
    broken = []
    for line in prose_lines(markdown):
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            if not (citing.parent / target.split("#")[0]).exists():
                broken.append(f"{citing}: link to {target}: no such file")
    return broken


def test_every_cited_heading_exists():
    this_file = Path(__file__).resolve()   # its made-up citations are meant to be broken
    broken = [line for path in repository_files(CITING_SUFFIXES) if path != this_file
              for line in broken_citations(text_of(path), path)]
    assert not broken, "\n".join(broken)


def test_every_relative_link_leads_to_a_file():
    broken = [line for path in repository_files({".md"})
              for line in broken_links(path.read_text(encoding="utf-8"), path)]
    assert not broken, "\n".join(broken)


def test_a_made_up_citation_is_caught():
    citing = REPO / "mpnn" / "example.py"
    assert broken_citations('# measured (RESULTS.md, "No such heading").', citing) == [
        f'{citing}: RESULTS.md, "No such heading": no such heading in {REPO / "RESULTS.md"}']
    assert len(broken_citations('# see NOWHERE.md, "Loader throughput"', citing)) == 1
    # A citation across two comment lines is read, and a real one passes.
    assert citations('# (RESULTS.md,\n    # "Training throughput")', citing) == [
        ("RESULTS.md", "Training throughput")]
    assert broken_citations('# (RESULTS.md,\n# "Training throughput")', citing) == []
    assert citations('(RESULTS.md, "Training\n# throughput")', citing) == [("RESULTS.md", "Training throughput")]


def test_a_heading_matches_whole_words_up_to_its_qualifier():
    assert heading_matches("Two ranks on 2 cores", "Two ranks on 2 cores: weak scaling (AMD machine)")
    assert heading_matches("Issue 14", "Issue 14, accuracy where design looks: third session")
    assert not heading_matches("Two", "Two stacks: Horovod on TensorFlow 2.15")
    assert not heading_matches("Training", "Training throughput")


def test_the_known_citations_are_found():
    this_file = Path(__file__).resolve()
    found = {(path.relative_to(REPO).as_posix(), name, heading)
             for path in repository_files(CITING_SUFFIXES) if path != this_file
             for name, heading in citations(text_of(path), path)}
    assert {
        ("mpnn/distributed.py", "RESULTS.md", "Training throughput"),
        ("mpnn/__init__.py", "ARCHITECTURE.md", "Keras on the current TensorFlow"),
        ("mpnn/models/layers.py", "benchmarks/log/2026-11-23-training-throughput.md", "On the AMD machine"),
        ("jobs/README.md", "docs/troubleshooting.md", "When things go wrong"),
        ("scripts/demo.sh", "RESULTS.md", "Water accuracy of the default MPNN"),
        ("mpnn/batch_cut.py", "RESULTS.md", "Training throughput"),   # wrapped in the quotes
    } <= found
    assert len(found) >= 30
