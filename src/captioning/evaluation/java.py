"""The Java processes behind the COCO metrics: finding Java, running it, reading its errors.

Every failure becomes a `MetricsError` with one line that says what failed, the informative
line of Java's output, and what to do.
"""

import shutil
import subprocess

from captioning.errors import MetricsError

NO_JAVA = (
    "The COCO caption metrics need Java 8 or newer on PATH (the PTB tokenizer and "
    "METEOR run on it): install a JRE, e.g. `apt-get install default-jre-headless`."
)
_CHECK_JAVA = "check that `java -version` runs (Java 8 or newer) and try again"


def java_available() -> bool:
    """Whether a `java` executable is on PATH."""
    return shutil.which("java") is not None


def require_java(advice: str) -> None:
    """Raises `MetricsError` (`NO_JAVA` and `advice`) when there is no `java` on PATH."""
    if not java_available():
        raise MetricsError(f"{NO_JAVA} {advice}")


def run_java(what: str, arguments, *, cwd, merge_output: bool = False):
    """Runs `java *arguments` in `cwd` with no input, and returns the finished process.

    Args:
        what: the program, for error messages (e.g. `"The PTB tokenizer"`).
        arguments: the arguments after `java`.
        cwd: the working directory.
        merge_output: send stderr into stdout instead of capturing it apart.

    Returns:
        The `subprocess.CompletedProcess`, stdout (and stderr) as bytes; a non-zero exit
        status is left for the caller to judge (see `java_failure`).

    Raises:
        MetricsError: Java could not be started.
    """
    try:
        return subprocess.run(
            ["java", *arguments],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
            check=False,
        )
    except OSError as error:
        raise MetricsError(
            f"{what} could not start Java ({error.strerror or error}); {_CHECK_JAVA}."
        ) from None


def java_failure(what: str, detail: str, returncode: int | None = None) -> MetricsError:
    """The `MetricsError` for a Java program that failed, with `detail` (its output) on one line.

    Args:
        what: the program, e.g. `"The PTB tokenizer"`.
        detail: what the process wrote; its informative line is kept (see `java_error`).
        returncode: its exit status, when it exited.
    """
    status = "" if returncode is None else f" with exit status {returncode}"
    return MetricsError(f"{what} (Java) failed{status}: {java_error(detail)}; {_CHECK_JAVA}.")


def java_error(output: str) -> str:
    """The informative lines of a failed Java process's output, on one line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return "no error output"
    errors = [line for line in lines if "Exception" in line or "Error" in line]
    if not errors:
        return lines[-1]
    causes = [line for line in errors if line.startswith("Caused by:")]
    return " ".join(dict.fromkeys([errors[0], *causes[-1:]]))
