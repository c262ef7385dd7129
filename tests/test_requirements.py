"""`requirements.txt` and `pyproject.toml`: what the Colab setup cell installs from."""

import importlib.metadata
import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.helpers import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
REQUIREMENTS = [Requirement(line) for line in
                (REPO_ROOT / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]


def test_requirements_txt_holds_every_dependency():
    # The setup cell installs requirements.txt, then the project with --no-deps: the
    # dependencies plus the default backend, the `tensorflow` extra.
    expected = PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["tensorflow"]
    assert sorted(map(str, REQUIREMENTS)) == sorted(str(Requirement(line)) for line in expected)


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=lambda r: r.name)
def test_requires_python_is_what_the_requirements_need(requirement):
    try:
        needed = importlib.metadata.metadata(requirement.name)["Requires-Python"]
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{requirement.name} is not installed here")
    lowest = re.fullmatch(r">=\s*(\d+\.\d+)", PYPROJECT["requires-python"].strip())
    assert lowest, PYPROJECT["requires-python"]
    if needed:
        assert SpecifierSet(needed).contains(f"{lowest[1]}.0"), (
            f"{requirement.name} {importlib.metadata.version(requirement.name)} needs Python "
            f"{needed}; pyproject.toml says {PYPROJECT['requires-python']}")
