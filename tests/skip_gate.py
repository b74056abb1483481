"""Fail the run when any test was skipped and ONRAMP_FAIL_ON_SKIP=1 (CI sets it).

A skipped test proves nothing, and in CI a skip usually means a missing service or browser
rather than a decision. tests/conftest.py imports these hooks; tests/test_skips.py loads this
module with `-p tests.skip_gate` to check it on a throwaway suite.
"""

from __future__ import annotations

import os

import pytest

ENV = "ONRAMP_FAIL_ON_SKIP"

# (node id, reason) of every skip in this process's session.
_skipped: list[tuple[str, str]] = []


def _enabled() -> bool:
    return os.environ.get(ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _record(report: pytest.CollectReport | pytest.TestReport) -> None:
    if not _enabled() or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = ""
    if isinstance(report.longrepr, tuple):  # (path, line, "Skipped: why")
        reason = str(report.longrepr[2])
    _skipped.append((report.nodeid or "(collection)", reason))


@pytest.hookimpl
def pytest_collectreport(report: pytest.CollectReport) -> None:
    _record(report)


@pytest.hookimpl
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _record(report)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _skipped:
        return
    terminalreporter.section(f"{ENV}=1: skipped tests fail this run", sep="=", red=True)
    for nodeid, reason in _skipped:
        terminalreporter.line(f"SKIPPED {nodeid} - {reason}" if reason else f"SKIPPED {nodeid}")
    terminalreporter.line(
        f"{len(_skipped)} skipped. Install what they need (see .ci/run) or remove the skip."
    )
