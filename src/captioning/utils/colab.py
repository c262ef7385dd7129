"""What the notebooks' setup cell does in Colab, once the clone is there.

`install_project(repo_dir)`:

1. `git pull` in the clone, so a later session runs the newest notebooks' package code;
2. `pip install` of `requirements.txt`, keeping the runtime's TensorFlow as it is: its line
   is left out and a constraint pins the installed version, so pip never replaces it (Colab's
   TensorFlow matches its GPU drivers, and the live session has it loaded). A TensorFlow
   outside the project's pins is kept with a warning;
3. `pip install --no-deps -e` of the clone;
4. pip's output shown when it fails (`-q` in a subprocess otherwise hides why), and an error
   that says to restart the session when pip changed a package this session has already
   imported.

It needs the standard library only, as it runs before the project's requirements are in.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from captioning.errors import CaptioningError

__all__ = ["install_project", "install_requirements", "update_clone"]

logger = logging.getLogger(__name__)

_TENSORFLOW = re.compile(r"tensorflow\s*(?P<spec>[<>=!~][^;#]*)?(?:[;#].*)?", re.IGNORECASE)
_SHOWN_LINES = 30


def install_project(repo_dir, *, python: str = sys.executable) -> None:
    """Updates the clone, then installs the project and its requirements into `python`.

    Raises:
        CaptioningError: `git pull` or pip failed (their output is in the message), or the
            session must be restarted before it can use what pip installed.
    """
    update_clone(repo_dir)
    install_requirements(repo_dir, python=python)


def update_clone(repo_dir) -> None:
    """`git pull --ff-only` in the clone `repo_dir`.

    Raises:
        CaptioningError: git failed; the message holds git's output and how to start over.
    """
    done = _run(["git", "-C", str(repo_dir), "pull", "--ff-only"])
    if done.returncode:
        raise CaptioningError(
            f"git pull in {repo_dir} failed:\n{_tail(done)}\nDelete the clone (in a cell: "
            f"!rm -rf {repo_dir}) and run this cell again to clone it afresh.")
    logger.info("%s: %s", repo_dir, done.stdout.strip().splitlines()[-1:] or "up to date")


def install_requirements(repo_dir, *, python: str = sys.executable) -> None:
    """Installs `requirements.txt` and the project (editable) without replacing TensorFlow.

    Args:
        repo_dir: the clone, holding `requirements.txt` and `pyproject.toml`.
        python: the interpreter to install into (the kernel's).

    Raises:
        CaptioningError: pip failed (its errors are in the message), or it changed a package
            that this session has imported already: then restart the session and run all the
            cells again (the second run installs nothing).
    """
    repo = Path(repo_dir)
    lines = (repo / "requirements.txt").read_text(encoding="utf-8").splitlines()
    tensorflow = _installed("tensorflow")
    constraints = []
    if tensorflow is not None:
        specs = [m["spec"] for m in map(_TENSORFLOW.fullmatch, map(str.strip, lines)) if m]
        lines = [line for line in lines if not _TENSORFLOW.fullmatch(line.strip())]
        constraints.append(f"tensorflow=={tensorflow}")
        outside = [spec for spec in specs if spec and not _satisfies(tensorflow, spec)]
        if outside:
            logger.warning("This runtime's TensorFlow %s is outside the project's pin "
                           "(tensorflow%s); it is kept, not replaced: a live session cannot "
                           "swap it, and Colab's build matches its GPU.", tensorflow,
                           outside[0].strip())
    before = _loaded_versions()
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text("\n".join(lines) + "\n", encoding="utf-8")
        command = ["install", "-q", "-r", str(requirements)]
        if constraints:
            pinned = Path(tmp) / "constraints.txt"
            pinned.write_text("\n".join(constraints) + "\n", encoding="utf-8")
            command += ["-c", str(pinned)]
        _pip(python, command)
    _pip(python, ["install", "-q", "--no-deps", "-e", str(repo)])
    importlib.invalidate_caches()
    after = _loaded_versions()
    changed = [f"{name} {version} -> {after.get(name, 'removed')}"
               for name, version in sorted(before.items())
               if after.get(name) != version and name != "captioning"]
    if changed:
        raise CaptioningError(
            f"pip changed {', '.join(changed)}, which this session has imported already. "
            "Restart the session (Runtime > Restart session), then run all the cells again: "
            "the second run installs nothing.")
    logger.info("Installed the project from %s%s.", repo,
                f" (TensorFlow {tensorflow} kept)" if tensorflow else "")


def _pip(python: str, arguments: list) -> None:
    done = _run([python, "-m", "pip", *arguments])
    if done.returncode:
        raise CaptioningError(f"pip {' '.join(arguments[:2])} failed (exit "
                              f"{done.returncode}):\n{_tail(done)}")


def _run(command: list) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True)
    except OSError as error:
        raise CaptioningError(f"cannot run {command[0]}: {error.strerror or error}") from None


def _tail(done: subprocess.CompletedProcess) -> str:
    lines = (done.stdout + "\n" + done.stderr).strip().splitlines()
    return "\n".join(lines[-_SHOWN_LINES:])


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _satisfies(version: str, spec: str) -> bool:
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # cannot tell: assume it fits
        return True
    return SpecifierSet(spec.strip()).contains(version, prereleases=True)


def _loaded_versions() -> dict:
    """The version of each installed distribution whose modules this process has imported."""
    owners = importlib.metadata.packages_distributions()
    loaded = {name.partition(".")[0] for name in list(sys.modules)}
    versions = {}
    for module in loaded:
        for distribution in owners.get(module, ()):
            version = _installed(distribution)
            if version is not None:
                versions[distribution] = version
    return versions
