"""ONRAMP_FAIL_ON_SKIP=1 turns a skipped test into a failed run (tests/skip_gate.py).

Each case runs pytest in a subprocess on a throwaway suite with only the gate loaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PASSING = "def test_passes():\n    assert True\n"
SKIPPING = (
    "import pytest\n\n"
    "def test_passes():\n    assert True\n\n"
    "@pytest.mark.skip(reason='needs a browser')\n"
    "def test_skipped():\n    assert True\n"
)
SKIPPING_MODULE = "import pytest\n\npytest.skip('no redis here', allow_module_level=True)\n"
XFAIL = (
    "import pytest\n\n"
    "@pytest.mark.xfail(reason='known bug', strict=True)\n"
    "def test_known_bug():\n    assert False\n"
)


def run_suite(tmp_path: Path, files: dict[str, str], *, gate: str | None) -> tuple[int, str]:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the project's configuration
    env = {k: v for k, v in os.environ.items() if k != "ONRAMP_FAIL_ON_SKIP"}
    env["PYTHONPATH"] = str(ROOT)
    if gate is not None:
        env["ONRAMP_FAIL_ON_SKIP"] = gate
    plugins = ["-p", "tests.skip_gate", "-p", "no:cacheprovider", "-p", "no:django"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *plugins, "-q", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


class SkipGateTests:
    def test_it_fails_a_run_with_a_skipped_test_and_names_it(self, tmp_path: Path) -> None:
        code, output = run_suite(tmp_path, {"test_a.py": SKIPPING}, gate="1")
        assert code == pytest.ExitCode.TESTS_FAILED, output
        assert "ONRAMP_FAIL_ON_SKIP=1: skipped tests fail this run" in output
        assert "test_a.py::test_skipped - Skipped: needs a browser" in output

    def test_it_fails_a_run_with_a_module_skipped_at_collection(self, tmp_path: Path) -> None:
        files = {"test_a.py": PASSING, "test_b.py": SKIPPING_MODULE}
        code, output = run_suite(tmp_path, files, gate="1")
        assert code == pytest.ExitCode.TESTS_FAILED, output
        assert "test_b.py" in output and "no redis here" in output

    def test_it_lets_skips_pass_when_not_asked(self, tmp_path: Path) -> None:
        code, output = run_suite(tmp_path, {"test_a.py": SKIPPING}, gate=None)
        assert code == pytest.ExitCode.OK, output
        assert "1 skipped" in output

    def test_it_passes_a_run_without_skips(self, tmp_path: Path) -> None:
        code, output = run_suite(tmp_path, {"test_a.py": PASSING, "test_x.py": XFAIL}, gate="1")
        assert code == pytest.ExitCode.OK, output
        assert "skipped tests fail this run" not in output

    def test_it_keeps_a_real_failure_a_failure(self, tmp_path: Path) -> None:
        failing = SKIPPING + "\ndef test_fails():\n    assert 1 == 2\n"
        code, output = run_suite(tmp_path, {"test_a.py": failing}, gate="1")
        assert code == pytest.ExitCode.TESTS_FAILED, output
        assert "1 failed" in output
