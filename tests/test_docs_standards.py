"""docs/standards.md is the one place rule IDs (`TX-08`, `DPOP-22`, `A3`, ...) are defined.

Every ID the code, the tests or the conformance suite cite has a row there, every row is cited
somewhere, and every module and test a row names exists. The repository also stands on its
own: no file refers to a path outside it. Reads files only (no git), so it runs anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STANDARDS = ROOT / "docs" / "standards.md"

#: Not part of the project's own text: tools' state, builds, virtualenvs, local data.
SKIPPED_DIRS = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".mypy_cache",
                ".ruff_cache", ".hypothesis", "build", "dist", "var", "reports", "node_modules",
                # Third-party code kept as it was shipped (axe-core's minified bundle).
                "vendor"}
MAX_BYTES = 2_000_000

#: A family rule ID (`DPOP-05`), optionally continued: `DPOP-05/07`, `DPOP-40-43`, `META-01..05`.
FAMILY_ID = re.compile(
    r"(?<![A-Za-z0-9_%-])([A-Z]{2,5})-(\d{2})((?:(?:/|-|\.\.)\d{2})*)(?![A-Za-z0-9_-])")
#: A local decision (`A3`), optionally continued: `A1-A3` (or an en dash), `A1/A4`, `A1, A4`.
LOCAL_ID = re.compile(
    r"(?<![A-Za-z0-9_%-])A(\d)((?:\s*(?:[-\u2013/,]|and)\s*A\d)*)(?![A-Za-z0-9_-])")
#: A row of docs/standards.md: `| ID | rule | source | enforced in | proved by |`.
ROW = re.compile(r"^\|\s*(A\d|[A-Z]{2,5}-\d{2})\s*\|(.*)\|\s*$")
#: A path, or `path::function`, in backticks.
REFERENCE = re.compile(r"`([\w./-]+\.py)(?:::(\w+))?`")


def text_files(*, skip: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """(path relative to the repository, text) for every readable text file."""
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in rel.parts[:-1]):
            continue
        if not path.is_file() or rel.as_posix().startswith(skip):
            continue
        if path.stat().st_size > MAX_BYTES:
            continue
        try:
            yield rel.as_posix(), path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def _expand(prefix: str, first: int, rest: str) -> list[str]:
    numbers = [first]
    for sep, value in re.findall(r"(/|-|\.\.)(\d{2})", rest):
        n = int(value)
        numbers.extend(range(numbers[-1] + 1, n + 1) if sep != "/" else [n])
    return [f"{prefix}-{n:02d}" for n in numbers]


def cited_ids(text: str) -> set[str]:
    ids: set[str] = set()
    for m in FAMILY_ID.finditer(text):
        ids.update(_expand(m.group(1), int(m.group(2)), m.group(3)))
    for m in LOCAL_ID.finditer(text):
        numbers = [int(m.group(1))]
        for sep, value in re.findall(r"([-\u2013/,]|and)\s*A(\d)", m.group(2)):
            n = int(value)
            numbers.extend(range(numbers[-1] + 1, n + 1) if sep in ("-", "\u2013") else [n])
        ids.update(f"A{n}" for n in numbers)
    return ids


def citations() -> dict[str, set[str]]:
    """Rule ID → the files citing it (everything but the documentation itself)."""
    found: dict[str, set[str]] = {}
    for rel, text in text_files(skip=("docs/", "tests/test_docs_standards.py")):
        for rule in cited_ids(text):
            found.setdefault(rule, set()).add(rel)
    return found


def documented() -> dict[str, list[str]]:
    """Rule ID → its row's cells, from docs/standards.md."""
    rows: dict[str, list[str]] = {}
    for line in STANDARDS.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            assert m.group(1) not in rows, f"docs/standards.md defines {m.group(1)} twice"
            rows[m.group(1)] = [cell.strip() for cell in m.group(2).split(" | ")]
    return rows


def test_the_id_patterns_read_compact_citations() -> None:
    assert cited_ids("DPOP-13/14/40-43, META-01..05; TX-08") == {
        "DPOP-13", "DPOP-14", "DPOP-40", "DPOP-41", "DPOP-42", "DPOP-43",
        "META-01", "META-02", "META-03", "META-04", "META-05", "TX-08"}
    assert cited_ids("Part A1\u2013A3, A4, A5 and Part A1/A4") == {"A1", "A2", "A3", "A4", "A5"}
    # Not rule IDs: digests, encodings, percent-escapes, base64 fragments.
    assert cited_ids("SHA-256 AES-256-GCM UTF-8 %C3%A9 x-AB-12 RFC 9449") == set()


def test_every_cited_rule_id_is_documented() -> None:
    missing = {rule: sorted(files) for rule, files in citations().items()
               if rule not in documented()}
    assert not missing, f"cited but not defined in docs/standards.md: {missing}"


def test_every_documented_rule_id_is_cited() -> None:
    unused = sorted(set(documented()) - set(citations()))
    assert not unused, f"docs/standards.md defines IDs nothing cites: {unused}"


def test_every_row_names_a_rule_a_source_a_module_and_a_test() -> None:
    for rule, cells in documented().items():
        assert len(cells) == 4 and all(cells), f"{rule}: expected rule | source | module | test"
        _, _, modules, proofs = cells
        assert REFERENCE.search(modules), f"{rule}: no enforcing module named"
        assert any(name for _, name in REFERENCE.findall(proofs)), f"{rule}: no test named"


def test_every_module_and_test_named_exists() -> None:
    problems = []
    for rule, cells in documented().items():
        for path, name in REFERENCE.findall(" ".join(cells[2:])):
            file = ROOT / path
            if not file.is_file():
                problems.append(f"{rule}: {path} does not exist")
            elif name and not re.search(rf"^\s*def {name}\(", file.read_text(encoding="utf-8"),
                                        re.MULTILINE):
                problems.append(f"{rule}: {path} has no function {name}")
    assert not problems, "\n".join(problems)


# --- the repository stands on its own ---------------------------------------------------------

#: Built from pieces so that this file does not match itself.
OUTSIDE_REFERENCES = re.compile("|".join([
    re.escape("." * 2 + "/" + "shared"),       # the directory beside the checkout
    re.escape("/" + "work" + "/"),             # the machine this was written on
    "STANDARDS" + r"\.md", "DESIGN" + r"\.md",  # documents that live outside the repository
]))


def test_no_file_refers_to_a_path_outside_the_repository() -> None:
    found = [f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
             for rel, text in text_files() for m in OUTSIDE_REFERENCES.finditer(text)]
    assert not found, "references to paths outside the repository:\n" + "\n".join(found)
