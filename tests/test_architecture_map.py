"""`docs/ARCHITECTURE.md` is the module map: every module of the package has its row."""

import re

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "captioning"
MAP = (REPO_ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")


def _rows() -> dict[str, set[str]]:
    """The map's table: subpackage (`""` for the top) -> the module names of its rows."""
    rows, current = {}, ""
    for line in MAP.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not line.startswith("|") or cells[1] in ("module", "---"):
            continue
        if cells[0]:
            current = "" if cells[0] == "(top)" else cells[0].strip("`").rstrip("/")
        rows.setdefault(current, set()).update(re.findall(r"`([\w]+\.py)`", cells[1]))
    return rows


def test_every_module_has_a_row_in_its_subpackage():
    rows = _rows()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        folder = path.parent.relative_to(PACKAGE).as_posix()
        folder = "" if folder == "." else folder
        text = path.read_text(encoding="utf-8")
        if not folder and "moved(__name__" in text:  # a 0.1 alias, covered by deprecation.py's row
            continue
        if path.name not in rows.get(folder, set()):
            missing.append(path.relative_to(PACKAGE).as_posix())
    assert not missing, f"docs/ARCHITECTURE.md has no row for {missing}"


def test_every_row_names_a_module_that_exists():
    stale = [f"{folder}/{name}" if folder else name
             for folder, names in _rows().items() for name in names
             if not (PACKAGE / folder / name).exists()]
    assert not stale, f"docs/ARCHITECTURE.md names modules that do not exist: {stale}"
