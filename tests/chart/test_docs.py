"""Checks of the documentation: every relative link in a Markdown file resolves (the file
exists, and a `#fragment` names a heading of it, slugged as GitHub does), the README states the
test command CI runs, and no user document refers to things outside the repository.

Run:  python3 -m pytest -q tests/chart/test_docs.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", "target", "node_modules", "__pycache__"}

# The documents a user reads, with the examples' comments.
USER_DOCS = [
    "README.md",
    "CONTRIBUTING.md",
    "SECURITY.md",
    "CHANGELOG.md",
    "docs",
    "deploy/charts/invite-operator/README.md",
    "deploy/charts/invite-operator/values.yaml",
    "deploy/charts/invite-operator-endpoint/README.md",
    "deploy/charts/invite-operator-endpoint/values.yaml",
    "examples",
]


def markdown_files() -> list[Path]:
    found = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        found.extend(Path(root) / f for f in files if f.endswith(".md"))
    return sorted(found)


FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, with their numbers."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: inline markup dropped, lowercased, punctuation removed,
    spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(path):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in prose_lines(path):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            found.append((number, match.group(1)))
    return found


def is_external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) is not None


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(path: Path) -> None:
    broken = []
    for number, target in links(path):
        if is_external(target):
            continue
        file_part, _, fragment = target.partition("#")
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{path.relative_to(REPO)}:{number}: {target}"
        if not resolved.exists():
            broken.append(f"{where} (no such file)")
            continue
        try:
            resolved.relative_to(REPO)
        except ValueError:
            broken.append(f"{where} (outside the repository)")
            continue
        if fragment and resolved.suffix == ".md" and unquote(fragment) not in anchors(resolved):
            broken.append(f"{where} (no heading with this anchor)")
    assert broken == [], "broken links:\n" + "\n".join(broken)


def test_the_readme_states_the_test_command_ci_runs() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    commands = re.findall(r"\bcargo test --workspace[^)\n]*", ci)
    assert commands, ".ci/run runs no `cargo test --workspace`"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for command in commands:
        assert command.strip() in readme, f"the README does not state `{command.strip()}`"


def test_the_readme_is_short() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 360, f"README.md has {lines} lines: move details to docs/"


INTERNAL = [
    (re.compile(r"\.\./shared\b|\bshared/(specs|realkube)\b"), "a folder outside the repository"),
    (re.compile(r"\bseed \d{3}\b", re.IGNORECASE), "an internal seed name"),
    (re.compile(r"\bissue \d+\b|\bissue #\d+\b", re.IGNORECASE), "an issue number"),
    (re.compile(r"\bthis machine\b", re.IGNORECASE), "'this machine'"),
]


def user_doc_files() -> list[Path]:
    files = []
    for entry in USER_DOCS:
        path = REPO / entry
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.exists():
            files.append(path)
    return files


@pytest.mark.parametrize("path", user_doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_user_documents_have_no_internal_references(path: Path) -> None:
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for pattern, what in INTERNAL:
            if pattern.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {what}: {line.strip()}")
    assert found == [], "\n".join(found)
