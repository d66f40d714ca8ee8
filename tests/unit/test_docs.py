"""The documentation holds together: the README is a front door, every relative link
resolves (to a file, and to a heading where it names one), and the code map in
docs/architecture.md names every module of agent/ and client/ and nothing else.

Pure file reading: no agent, no sockets, no fixtures."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest


def _root() -> Path:
    """The checkout: the nearest directory above this file that holds pyproject.toml
    (so this file may move between test folders)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    raise RuntimeError("no pyproject.toml above " + __file__)


ROOT = _root()
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
README_MAX_LINES = 250  # a front door: rbw's README is 177 lines, h11's 168, httpx's 147
QUICK_START_BY_LINE = 60  # a new reader meets the first commands on the first screen
CODE_MAP_MIN_ENTRIES = 40  # agent/ and client/ hold more modules than this: fewer means the map was not read
PACKAGES = ("agent", "client")


def documents() -> list[Path]:
    """Every markdown file whose links must resolve."""
    return [README, ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]


# --- markdown, as far as these checks need it ---------------------------------

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks."""
    out, fenced = [], ""
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if match and (not fenced or match.group(1) == fenced):
            fenced = "" if fenced else match.group(1)
            continue
        if not fenced:
            out.append((number, line))
    return out


def fences(text: str) -> list[tuple[int, str, str]]:
    """(first line number, info string, body) of every fenced code block."""
    out: list[tuple[int, str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match:
            start, info, body = i + 1, lines[i].strip()[3:].strip(), []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(match.group(1)):
                body.append(lines[i])
                i += 1
            out.append((start, info, "\n".join(body)))
        i += 1
    return out


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text, lower-cased, with everything but
    letters, digits, '_', '-' and spaces removed, spaces as '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, with GitHub's -1, -2 for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link that is not a URL, outside code."""
    out = []
    for number, line in prose_lines(path.read_text()):
        prose = CODE_SPAN.sub("", line)
        targets = [m.group(1) for m in INLINE_LINK.finditer(prose)]
        definition = REFERENCE_DEFINITION.match(prose)
        if definition:
            targets.append(definition.group(1))
        out += [(number, target) for target in targets if not SCHEME.match(target)]
    return out


def broken(path: Path, target: str, root: Path = ROOT) -> str | None:
    """Why a link from ``path`` to ``target`` does not resolve in the checkout ``root``, or None."""
    file_part, _, anchor = target.partition("#")
    destination = (path.parent / file_part).resolve() if file_part else path
    if not destination.exists():
        return "no such file"
    if root not in destination.parents and destination != root:
        return "outside the repository"
    if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
        return f"no heading #{anchor} in {destination.relative_to(root).as_posix()}"
    return None


# --- the README is a front door -----------------------------------------------


def test_the_readme_is_a_front_door() -> None:
    text = README.read_text()
    lines = len(text.splitlines())
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; the rest belongs in docs/"
    blocks = fences(text)
    shell = [(start, body) for start, info, body in blocks if info in ("sh", "bash", "shell", "console")]
    assert shell, "README.md has no shell block"
    assert shell[0][0] < QUICK_START_BY_LINE, f"the first shell block starts at line {shell[0][0]}"
    quick_start = [start for start, body in shell if re.search(r"^agent init\b", body, re.M)]
    assert quick_start, "no shell block of README.md starts with `agent init`"
    assert quick_start[0] < QUICK_START_BY_LINE, f"the quick start (`agent init`) starts at line {quick_start[0]}"
    python = [body for _, info, body in blocks if info == "python"]
    assert any("from client import" in body for body in python), "README.md shows no Python"


def test_the_readme_gives_the_set_up_commands_ci_runs() -> None:
    """The first shell block installs and tests; .ci/run runs the test command it gives."""
    first = next((body for _, info, body in fences(README.read_text()) if info == "sh"), "")
    commands = [line.split("#", 1)[0].strip() for line in first.splitlines()]
    assert "scripts/install.sh" in commands, first
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    runs = [shlex.join(shlex.split(line)[1:]) for line in ci if line.startswith("exec ")]
    assert len(runs) == 1, ci
    assert runs[0] in commands, f".ci/run runs {runs[0]!r}; README.md's set-up gives {commands}"


# --- links ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("From the shell: `agent exec` and `agent run`", "from-the-shell-agent-exec-and-agent-run"),
        ("keyring backend (twine, pip, poetry, the keyring CLI)", "keyring-backend-twine-pip-poetry-the-keyring-cli"),
        ("Where a target is missed, and why", "where-a-target-is-missed-and-why"),
        ("`client/`: what programs import", "client-what-programs-import"),
        ("The figures, 2026-12-01", "the-figures-2026-12-01"),
    ],
)
def test_slugs_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_every_relative_link_resolves() -> None:
    checked, failures = 0, []
    for path in documents():
        assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
        for number, target in relative_links(path):
            checked += 1
            why = broken(path, target)
            if why:
                failures.append(f"{path.relative_to(ROOT)}:{number}: {target}: {why}")
    assert not failures, "broken links:\n" + "\n".join(failures)
    assert checked >= 50, f"only {checked} relative links found: is the link pattern still right?"
    readme_targets = {target.partition("#")[0] for _, target in relative_links(README)}
    assert {"docs/install.md", "docs/cli.md", "docs/architecture.md", "SECURITY.md"} <= readme_targets


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    page, other = tmp_path / "docs" / "page.md", tmp_path / "other.md"
    page.parent.mkdir()
    page.write_text(
        "# A `page`: links\n\n[ok](#a-page-links) [gone](missing.md) `[code](nowhere.md)`\n"
        "[up](../other.md#two-1)\n\n```\n[fenced](no.md)\n```\n[def]: ../other.md#three\n"
    )
    other.write_text("# Two\n\n## Two\n")
    assert relative_links(page) == [
        (3, "#a-page-links"),
        (3, "missing.md"),
        (4, "../other.md#two-1"),
        (9, "../other.md#three"),
    ]
    assert broken(page, "#a-page-links", root=tmp_path) is None
    assert broken(page, "../other.md#two-1", root=tmp_path) is None
    assert broken(page, "../other.md#three", root=tmp_path) == "no heading #three in other.md"
    assert broken(page, "missing.md", root=tmp_path) == "no such file"
    assert broken(page, "../other.md", root=page.parent) == "outside the repository"


# --- the code map ---------------------------------------------------------------


def code_map() -> list[str]:
    """The paths of the `## Code map` section of docs/architecture.md, one per line
    that starts with ``- `path` ``, in order."""
    text = ARCHITECTURE.read_text()
    match = re.search(r"^## Code map\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, "docs/architecture.md has no '## Code map' section"
    return re.findall(r"^- `([^`]+)`", match.group(1), re.M)


def only_a_docstring(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def modules() -> tuple[set[str], set[str]]:
    """(every module file, the ones the map must name): every *.py of agent/ and
    client/; an __init__.py with nothing but a docstring may be left out."""
    files = {p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts}
    every = {p.relative_to(ROOT).as_posix() for p in files}
    required = {p.relative_to(ROOT).as_posix() for p in files if not (p.name == "__init__.py" and only_a_docstring(p))}
    return every, required


def test_the_code_map_names_every_module_and_no_other_file() -> None:
    listed = code_map()
    every, required = modules()
    missing = sorted(required - set(listed))
    stale = sorted(set(listed) - every)
    twice = sorted({path for path in listed if listed.count(path) > 1})
    problems = []
    if missing:
        problems.append('missing (add a line "- `path`: what it holds"):\n  ' + "\n  ".join(missing))
    if stale:
        problems.append("stale (not a module file of agent/ or client/):\n  " + "\n  ".join(stale))
    if twice:
        problems.append("listed more than once:\n  " + "\n  ".join(twice))
    assert not problems, "docs/architecture.md's code map is out of date.\n" + "\n".join(problems)
    assert len(listed) >= CODE_MAP_MIN_ENTRIES, f"the code map has {len(listed)} entries"
