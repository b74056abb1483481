"""Settings come only from the environment: production passes Django's deploy checks, and a
missing or malformed value stops the process instead of falling back silently."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from portal.env import env_bool, env_float, env_int, env_list, env_secret, env_str

ROOT = Path(__file__).resolve().parents[2]


def manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run manage.py in a clean environment holding only `env` (nothing from this process)."""
    base = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    base["ONRAMP_VAR_DIR"] = str(tmp_path / "var")
    base.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def production(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'check.sqlite3'}",
        "ONRAMP_SANDBOX": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "onramp.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://onramp.example.com",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/15",
    }
    env.update(overrides)
    return {key: value for key, value in env.items() if value is not None}


def deploy_check(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **env)


class DeployCheckTests:
    def test_it_passes_the_deploy_checks_in_production(self, tmp_path: Path) -> None:
        result = deploy_check(tmp_path, production(tmp_path))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "no issues" in result.stdout

    def test_it_reads_the_secret_key_from_a_file(self, tmp_path: Path) -> None:
        key_file = tmp_path / "secret_key"
        key_file.write_text(secrets.token_urlsafe(50) + "\n")
        env = production(tmp_path)
        del env["SECRET_KEY"]
        env["SECRET_KEY_FILE"] = str(key_file)
        result = deploy_check(tmp_path, env)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_it_refuses_to_start_without_a_secret_key(self, tmp_path: Path) -> None:
        env = production(tmp_path)
        del env["SECRET_KEY"]
        result = deploy_check(tmp_path, env)
        assert result.returncode != 0
        assert "SECRET_KEY" in result.stderr
        assert not (tmp_path / "var" / "secret_key").exists()  # no key was made up

    def test_it_fails_the_deploy_checks_with_a_weak_secret_key(self, tmp_path: Path) -> None:
        result = deploy_check(tmp_path, production(tmp_path, SECRET_KEY="too-short"))
        assert result.returncode != 0
        assert "security.W009" in result.stdout + result.stderr

    def test_it_fails_the_deploy_checks_with_debug_on(self, tmp_path: Path) -> None:
        result = deploy_check(tmp_path, production(tmp_path, DEBUG="true"))
        assert result.returncode != 0
        assert "security.W018" in result.stdout + result.stderr

    def test_it_stops_on_a_malformed_value(self, tmp_path: Path) -> None:
        result = deploy_check(tmp_path, production(tmp_path, ONRAMP_SECURE="sometimes"))
        assert result.returncode != 0
        assert "ONRAMP_SECURE must be true or false" in result.stderr


class EnvHelperTests:
    def test_it_reads_booleans_and_rejects_anything_else(self, monkeypatch) -> None:
        for raw, expected in [("1", True), ("Yes", True), (" on ", True), ("false", False)]:
            monkeypatch.setenv("ONRAMP_TEST_FLAG", raw)
            assert env_bool("ONRAMP_TEST_FLAG") is expected, raw
        monkeypatch.setenv("ONRAMP_TEST_FLAG", "maybe")
        with pytest.raises(ImproperlyConfigured, match="ONRAMP_TEST_FLAG"):
            env_bool("ONRAMP_TEST_FLAG", True)
        monkeypatch.delenv("ONRAMP_TEST_FLAG")
        assert env_bool("ONRAMP_TEST_FLAG", True) is True

    def test_it_reads_numbers_and_rejects_typos(self, monkeypatch) -> None:
        monkeypatch.setenv("ONRAMP_TEST_INT", "42")
        assert env_int("ONRAMP_TEST_INT", 1) == 42
        monkeypatch.setenv("ONRAMP_TEST_INT", "4O")
        with pytest.raises(ImproperlyConfigured, match="ONRAMP_TEST_INT"):
            env_int("ONRAMP_TEST_INT", 1)
        monkeypatch.setenv("ONRAMP_TEST_INT", "1.5")
        with pytest.raises(ImproperlyConfigured):
            env_int("ONRAMP_TEST_INT", 1)
        assert env_float("ONRAMP_TEST_INT", 0.0) == 1.5
        monkeypatch.setenv("ONRAMP_TEST_INT", "fast")
        with pytest.raises(ImproperlyConfigured):
            env_float("ONRAMP_TEST_INT", 0.0)
        monkeypatch.delenv("ONRAMP_TEST_INT")
        assert env_int("ONRAMP_TEST_INT", 7) == 7

    def test_it_reads_lists_and_strings(self, monkeypatch) -> None:
        monkeypatch.setenv("ONRAMP_TEST_LIST", " a.example.com, ,b.example.com ")
        assert env_list("ONRAMP_TEST_LIST") == ["a.example.com", "b.example.com"]
        monkeypatch.delenv("ONRAMP_TEST_LIST")
        assert env_list("ONRAMP_TEST_LIST", ["x"]) == ["x"]
        assert env_str("ONRAMP_TEST_LIST", "d") == "d"

    def test_it_reads_secrets_from_files_first(self, monkeypatch, tmp_path: Path) -> None:
        secret = tmp_path / "password"
        secret.write_text("from-the-file\n")
        monkeypatch.setenv("ONRAMP_TEST_SECRET", "from-the-variable")
        assert env_secret("ONRAMP_TEST_SECRET") == "from-the-variable"
        monkeypatch.setenv("ONRAMP_TEST_SECRET_FILE", str(secret))
        assert env_secret("ONRAMP_TEST_SECRET") == "from-the-file"
        monkeypatch.setenv("ONRAMP_TEST_SECRET_FILE", str(tmp_path / "missing"))
        with pytest.raises(ImproperlyConfigured, match="ONRAMP_TEST_SECRET_FILE"):
            env_secret("ONRAMP_TEST_SECRET")


def settings_variables() -> set[str]:
    """Every variable portal/settings.py reads through the env helpers."""
    source = (ROOT / "portal" / "settings.py").read_text()
    found = set(re.findall(r"env_(?:str|bool|int|float|list|secret)\(\s*\"([A-Z0-9_]+)\"", source))
    found |= {f"{name}_FILE" for name in re.findall(r"env_secret\(\s*\"([A-Z0-9_]+)\"", source)}
    return found


class ConfigurationDocsTests:
    def test_it_documents_every_setting_in_env_example_and_readme(self) -> None:
        variables = settings_variables()
        assert {"DATABASE_URL", "SECRET_KEY", "SECRET_KEY_FILE", "CELERY_BROKER_URL"} <= variables
        example = (ROOT / ".env.example").read_text()
        readme = (ROOT / "README.md").read_text()
        in_example = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
        missing_example = sorted(variables - in_example)
        missing_readme = sorted(v for v in variables if f"`{v}`" not in readme)
        assert missing_example == [], f".env.example lacks {missing_example}"
        assert missing_readme == [], f"README.md's configuration table lacks {missing_readme}"
