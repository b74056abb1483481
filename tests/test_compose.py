"""docker-compose.yml against the Compose Specification, as `docker compose config` would
read it: variables interpolated (`${VAR:-default}`, nested, `$$` escapes), YAML merge keys
resolved, then parsed by the spec-complete `compose_spec` parser (the Rust crate behind
podlet), which refuses unknown keys, wrong types and invalid values. There is no Docker
engine or compose plugin on the CI machines, so this is how CI checks the file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {"postgres", "redis", "sandbox", "web", "worker", "beat"}
_ESCAPED = "\0dollar\0"
_INNERMOST = re.compile(r"\$\{([^${}]*)\}")
_PLAIN = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution, innermost first so defaults may hold variables."""

    def substitute(match: re.Match[str]) -> str:
        expr = match.group(1)
        parsed = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", expr, re.S)
        if parsed is None:
            raise ValueError(f"invalid interpolation ${{{expr}}}")
        name, op, arg = parsed.group(1), parsed.group(2) or "", parsed.group(3) or ""
        value, is_set = env.get(name), name in env
        if not op:
            return value or ""
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if is_set else arg
        if op in (":?", "?"):
            if (op == ":?" and not value) or not is_set:
                raise ValueError(f"required variable {name} is missing: {arg}")
            return value or ""
        if op == ":+":
            return arg if value else ""
        return arg if is_set else ""  # "+"

    text = text.replace("$$", _ESCAPED)
    while True:
        replaced = _INNERMOST.sub(substitute, text)
        if replaced == text:
            break
        text = replaced
    text = _PLAIN.sub(lambda m: env.get(m.group(1), ""), text)
    return text.replace(_ESCAPED, "$")


def load(text: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The file as compose resolves it; raises ValueError when the spec refuses it."""
    resolved = yaml.safe_load(interpolate(text, env or {}))  # merge keys (<<) resolved
    PyCompose.from_json(json.dumps(resolved))
    for name, service in resolved["services"].items():
        unknown = set(service.get("depends_on") or ()) - set(resolved["services"])
        if unknown:
            raise ValueError(f"service {name} depends on undefined service(s) {sorted(unknown)}")
    return resolved


class InterpolationTests:
    def test_it_follows_composes_rules(self) -> None:
        env = {"SET": "x", "EMPTY": ""}
        assert interpolate("${SET} ${UNSET} $SET", env) == "x  x"
        assert interpolate("${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", env) == "d d  d"
        assert interpolate("${SET:+alt} ${EMPTY:+alt}", env) == "alt "
        assert interpolate("a://${U:-${SET:-n}}@h", env) == "a://x@h"
        assert interpolate("$${NOT_A_VAR:-3}", env) == "${NOT_A_VAR:-3}"
        with pytest.raises(ValueError, match="required variable"):
            interpolate("${UNSET:?set it}", env)


class ComposeFileTests:
    def test_it_is_valid_with_no_environment_and_wires_every_service(self) -> None:
        config = load(COMPOSE.read_text())

        services = config["services"]
        assert set(services) == SERVICES
        assert "gunicorn portal.wsgi:application" in " ".join(services["web"]["command"])
        assert "celery -A portal worker" in " ".join(services["worker"]["command"])
        assert services["beat"]["command"][:4] == ["celery", "-A", "portal", "beat"]
        assert services["sandbox"]["profiles"] == ["sandbox"]
        for name in ("web", "worker", "beat"):
            env = services[name]["environment"]
            assert env["DATABASE_URL"] == "postgres://onramp:onramp@postgres:5432/onramp"
            assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0"
            assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        for name in ("postgres", "redis", "web"):
            assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
        assert services["web"]["ports"] == ["8000:8000"]
        # `$$` reaches the container as `$`: the shell there expands it.
        assert "--workers ${WEB_CONCURRENCY:-3}" in services["web"]["command"][2]

    def test_the_environment_configures_it(self) -> None:
        config = load(
            COMPOSE.read_text(),
            {"DATABASE_URL": "postgres://u:p@db.internal/onramp", "WORKER_REPLICAS": "4"},
        )
        assert config["services"]["worker"]["environment"]["DATABASE_URL"] == (
            "postgres://u:p@db.internal/onramp"
        )
        assert config["services"]["worker"]["deploy"]["replicas"] == 4

    @pytest.mark.parametrize(
        ("broken", "fixed"),
        [
            ("restarts: unless-stopped", "restart: unless-stopped"),
            ("condition: service_happy", "condition: service_healthy"),
            ("interval: often", "interval: 5s"),
            ("replicas: many", "replicas: ${WORKER_REPLICAS:-1}"),
            ("      brokers:\n        condition", "      redis:\n        condition"),
        ],
    )
    def test_the_check_refuses_a_broken_file(self, broken: str, fixed: str) -> None:
        text = COMPOSE.read_text()
        assert fixed in text
        with pytest.raises(ValueError):
            load(text.replace(fixed, broken, 1))
