"""``manage.py seed_environments``: create the Environment rows of ONRAMP_ENVIRONMENTS.

Sandbox (settings.SANDBOX): each environment gets its sandbox account (dev 111111111111,
staging 222222222222, prod 333333333333) and the role
arn:aws:iam::<account>:role/onramp-deployer. Otherwise the account, role and region come
from ONRAMP_ENV_<NAME>_ACCOUNT_ID, ONRAMP_ENV_<NAME>_ROLE_ARN (may be set to empty: use
Onramp's own credentials) and ONRAMP_ENV_<NAME>_REGION.

Idempotent. A row that exists keeps what admins edited; only its empty Lambda list is
filled in. ``--reset`` puts every seeded field back to its default.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import Field

from portal.audit import audit_record
from portal.models import Environment
from portal.sandbox.seed import DEFAULT_FUNCTIONS, sandbox_account, sandbox_role_arn

PRODUCTION_NAMES = {"prod", "production"}


def _env_var(name: str, suffix: str) -> str:
    return f"ONRAMP_ENV_{name.upper().replace('-', '_')}_{suffix}"


def environment_defaults(name: str, position: int) -> dict[str, Any]:
    """The seeded fields of one environment, from the sandbox or the process environment."""
    if settings.SANDBOX:
        account_id = sandbox_account(name, position)
        role_arn = sandbox_role_arn(account_id)
        region = settings.AWS_REGION
    else:
        names = {s: _env_var(name, s) for s in ("ACCOUNT_ID", "ROLE_ARN", "REGION")}
        missing = [var for var in names.values() if var not in os.environ]
        if missing:
            raise CommandError(
                f"Environment {name!r} needs {', '.join(missing)} "
                "(ONRAMP_SANDBOX is off, so there are no sandbox accounts to fall back on)."
            )
        account_id = os.environ[names["ACCOUNT_ID"]].strip()
        role_arn = os.environ[names["ROLE_ARN"]].strip()
        region = os.environ[names["REGION"]].strip()
    return {
        "order": position,
        "account_id": account_id,
        "region": region,
        "role_arn": role_arn,
        "lambda_functions": list(DEFAULT_FUNCTIONS),
        "is_production": name in PRODUCTION_NAMES,
    }


def _model_defaults() -> dict[str, Any]:
    """The resource-name templates, back to the model's defaults (for --reset)."""
    fields = (
        "state_machine_name",
        "metadata_table_name",
        "processed_bucket_name",
        "raw_bucket_prefix",
        "schema_bucket_name",
        "events_role_name",
        "lambda_alias",
        "dashboard_name",
        "kms_key_alias",
    )
    defaults: dict[str, Any] = {}
    for name in fields:
        field = Environment._meta.get_field(name)
        assert isinstance(field, Field)  # all are concrete model fields, not relations
        defaults[name] = field.get_default()
    return defaults


def seed_environments(*, reset: bool = False) -> list[tuple[Environment, str]]:
    """Create (or with `reset`, restore) the rows of settings.ONRAMP_ENVIRONMENTS."""
    results: list[tuple[Environment, str]] = []
    with transaction.atomic():
        for position, name in enumerate(settings.ONRAMP_ENVIRONMENTS):
            env = Environment.objects.select_for_update().filter(name=name).first()
            if env is None:
                env = Environment(name=name, **environment_defaults(name, position))
                action = "created"
            elif reset:
                values = {**environment_defaults(name, position), **_model_defaults()}
                changed = [f for f, v in values.items() if getattr(env, f) != v]
                for field, value in values.items():
                    setattr(env, field, value)
                action = "updated" if changed else "unchanged"
            elif not env.lambda_functions:
                env.lambda_functions = list(DEFAULT_FUNCTIONS)
                action = "updated"
            else:
                action = "unchanged"
            if action != "unchanged":
                try:
                    env.full_clean()
                except ValidationError as exc:
                    problems = "; ".join(
                        f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items()
                    )
                    raise CommandError(f"Environment {name!r} is not valid: {problems}") from exc
                env.save()
                audit_record(
                    action=f"environment.{action}",
                    actor_label="seed_environments",
                    obj=env,
                    data={
                        "account_id": env.account_id,
                        "region": env.region,
                        "role_arn": env.role_arn,
                        "reset": reset,
                    },
                )
            results.append((env, action))
    return results


class Command(BaseCommand):
    help = "Create the Environment rows of ONRAMP_ENVIRONMENTS (dev, staging, prod)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset", action="store_true", help="overwrite admin edits with the defaults"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for env, action in seed_environments(reset=options["reset"]):
            role = env.role_arn or "Onramp's own credentials"
            self.stdout.write(
                f"{env.name}: {action} (account {env.account_id}, {env.region}, {role})"
            )
