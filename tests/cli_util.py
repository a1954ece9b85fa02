"""Running the ``textenv`` command line in tests: in a subprocess (as a user would) or in this process (faster)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from agents.cli import main


def textenv(*args: str, check: bool = True, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m agents ARGS`` in a subprocess; ``check`` raises with its output unless it exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "agents", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def run_main(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``main(ARGS)`` in this process: (exit code, stdout, stderr)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    """Exit 2, one ``textenv: error:`` line holding every fragment, no traceback."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("textenv: error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def default_sigint() -> None:
    """A child's ``preexec_fn``: SIGINT handled by default and not blocked, as a shell starts a command. A process
    inherits an ignored or blocked SIGINT from its parent, and a test runner's worker may have one."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
