"""portal/sandbox/state.py: the sandbox keeps its AWS state across restarts.

Each test runs ``manage.py sandbox`` as a real process against the test database, with a
state folder of its own and a short save interval, and stops it the ways the launcher or
an operator would: SIGTERM, SIGKILL, ``--reset``. Provisioning and smoke runs execute
in-process with the engine (`dispatch.advance`), against that process.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from django.core.management import call_command

from onboarding import kinds
from onboarding.aws.diff import pending
from onboarding.steps.drift import drift_for
from portal import aws
from portal.models import Environment
from portal.sandbox.seed import SECRET_NAME
from portal.sandbox.state import STATE_FILE
from tests.onboarding.test_provisioning import (
    approved_request,
    clients,
    drive,
    engineer_fixture,  # noqa: F401 - fixture
    logged_actions,
    media_fixture,  # noqa: F401 - fixture
    plan_of,
    provision,
    start,
)
from tests.portal.test_sandbox import ROOT, _database_url

SAVE_SECONDS = 0.5
READY = "sandbox ready on "


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SandboxProcess:
    """``manage.py sandbox`` on a fixed port with its state in `state_dir`."""

    def __init__(self, state_dir: Path, port: int, *args: str, **settings: str) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "ONRAMP_SANDBOX": "true",
            "ONRAMP_SANDBOX_STATE_DIR": str(state_dir),
            "ONRAMP_SANDBOX_SAVE_SECONDS": str(SAVE_SECONDS),
            **settings,
        }
        env.pop("AWS_ENDPOINT_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "sandbox", "--port", str(port), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line)
                if line.startswith(READY):
                    ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not ready.wait(90):
            self.kill()
            pytest.fail(f"the sandbox did not start:\n{self.output}")
        self.url = f"http://127.0.0.1:{port}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(5)


@pytest.fixture(name="dev")
def dev_fixture(transactional_db: None, settings: Any) -> Environment:
    """The environment rows, committed so the sandbox process sees them; dev of them."""
    call_command("seed_environments", stdout=io.StringIO())
    return Environment.objects.get(name="dev")


@pytest.fixture(name="run_sandbox")
def run_sandbox_fixture(tmp_path: Path, settings: Any) -> Any:
    """Start sandbox processes sharing one state folder and one port; clients point there."""
    state_dir = tmp_path / "sandbox-state"
    port = _free_port()
    started: list[SandboxProcess] = []
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{port}"
    aws.reset_clients()

    def run(*args: str, **settings: str) -> SandboxProcess:
        process = SandboxProcess(state_dir, port, *args, **settings)
        started.append(process)
        return process

    run.state_dir = state_dir  # type: ignore[attr-defined]
    yield run
    for process in started:
        process.kill()
    aws.reset_clients()


def _secret_value(env: Environment, name: str) -> str | None:
    try:
        return str(clients(env)("secretsmanager").get_secret_value(SecretId=name)["SecretString"])
    except ClientError as exc:
        if aws.error_code(exc) == "ResourceNotFoundException":
            return None
        raise


class SandboxStateTests:
    def test_a_provisioned_source_survives_a_restart_with_no_drift(
        self, dev, personas, engineer, run_sandbox
    ):
        first = run_sandbox()
        assert "nothing saved yet" in first.output
        request = approved_request(personas)
        plan = plan_of(request, dev)
        assert provision(request, engineer).status == "succeeded"
        # A key with its alias, something it encrypted, and a secret of our own.
        kms = clients(dev)("kms")
        key_id = kms.create_key(Description="survives a restart")["KeyMetadata"]["KeyId"]
        alias = f"alias/state-{uuid.uuid4().hex[:8]}"
        kms.create_alias(AliasName=alias, TargetKeyId=key_id)
        sealed = kms.encrypt(KeyId=alias, Plaintext=b"kept")["CiphertextBlob"]
        secret = f"state/{uuid.uuid4().hex[:8]}"
        clients(dev)("secretsmanager").create_secret(Name=secret, SecretString="s3cr3t")

        assert first.terminate() == 0
        second = run_sandbox()

        # The database says the source is provisioned in dev, and AWS agrees.
        assert pending(drift_for(request, dev)) == []
        assert "sandbox state restored" in second.output
        again = provision(request, engineer)
        assert again.status == "succeeded", again.error
        assert set(logged_actions(again)) == {"unchanged"}
        assert clients(dev)("s3").get_bucket_policy(Bucket=plan["bucket"]["name"])["Policy"]
        # Same key id behind the alias, and what it encrypted before still decrypts.
        assert kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"] == key_id
        assert kms.decrypt(CiphertextBlob=sealed)["Plaintext"] == b"kept"
        assert _secret_value(dev, secret) == "s3cr3t"
        # Seeding on top of the restored state duplicated nothing.
        assert "created" not in second.output
        keys = [k["KeyId"] for k in kms.list_keys()["Keys"]]
        assert len(keys) == len(set(keys))
        # The pipeline (rules, targets, state machine, Lambdas, table) runs the source's files.
        smoke = drive(start(kinds.smoke_test, request, engineer))
        assert smoke.status == "succeeded", smoke.error

    def test_a_sigkill_after_a_save_interval_keeps_the_state_and_reset_starts_clean(
        self, dev, run_sandbox
    ):
        first = run_sandbox()
        seeded = _secret_value(dev, SECRET_NAME)
        assert seeded
        secret = f"state/{uuid.uuid4().hex[:8]}"
        clients(dev)("secretsmanager").create_secret(Name=secret, SecretString="kept")
        time.sleep(SAVE_SECONDS * 4)

        first.kill()  # SIGKILL: no clean shutdown, only the timed save
        second = run_sandbox()

        assert _secret_value(dev, secret) == "kept"
        assert _secret_value(dev, SECRET_NAME) == seeded
        assert second.terminate() == 0

        third = run_sandbox("--reset")
        # A clean sandbox has forgotten the role sessions too: clients assume roles again,
        # as web and workers do when `onramp.py run --reset-sandbox` starts them.
        aws.reset_clients()

        assert "deleted (--reset)" in third.output
        assert _secret_value(dev, secret) is None
        # Clean means freshly seeded: the pipeline is back, with a new token.
        assert _secret_value(dev, SECRET_NAME) not in (None, seeded)

    @pytest.mark.parametrize("durable", [True, False], ids=["durable", "timed-only"])
    def test_a_write_it_answered_survives_a_sigkill_right_after_it_when_durable(
        self, dev, run_sandbox, durable
    ):
        """AWS never forgets a write it acknowledged; nor does the sandbox, unless told to
        rely on its timed saves only (an hour apart here)."""
        settings = {
            "ONRAMP_SANDBOX_SAVE_SECONDS": "3600",
            "ONRAMP_SANDBOX_DURABLE_WRITES": str(durable).lower(),
        }
        first = run_sandbox(**settings)
        secret = f"durable/{uuid.uuid4().hex[:8]}"
        clients(dev)("secretsmanager").create_secret(Name=secret, SecretString="kept")

        first.kill()  # at once: no timed save has happened since the write
        run_sandbox(**settings)

        assert _secret_value(dev, secret) == ("kept" if durable else None)

    def test_an_unreadable_state_file_is_set_aside_and_the_sandbox_starts_seeded(
        self, dev, run_sandbox
    ):
        state_dir: Path = run_sandbox.state_dir
        state_dir.mkdir(parents=True)
        (state_dir / STATE_FILE).write_bytes(b"\x80\x05 not a pickle")

        process = run_sandbox()

        assert "sandbox state could not be read" in process.output
        aside = [p for p in state_dir.iterdir() if p.name.startswith(f"{STATE_FILE}.unreadable-")]
        assert len(aside) == 1
        assert aside[0].read_bytes() == b"\x80\x05 not a pickle"
        assert _secret_value(dev, SECRET_NAME)
        # It saved what it seeded in a new file, and stops cleanly.
        assert "sandbox state saved in" in process.output
        assert (state_dir / STATE_FILE).stat().st_size > 0
        assert process.terminate() == 0
