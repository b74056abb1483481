"""The catalog of live sources (SOP-001 step 8, `DATA_CATALOG.md`), and where each source
stands per environment.

A source is live in an environment when its newest rollout run there (provision, smoke test
or teardown) is a smoke test that passed — the rule `services.rollout_states` applies to one
ticket. Here it is computed for many requests at once from one query of their runs, so the
catalog page runs a constant number of queries however many sources it lists.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.contrib.contenttypes.models import ContentType
from django.db.models import Q
from django.urls import reverse

from onboarding.models import OnboardingRequest
from onboarding.provisioning import PROVISION_KIND, SMOKE_KIND, TEARDOWN_KIND
from portal.models import Environment
from portal.notify import absolute_url
from portal.runs.models import ACTIVE_RUN_STATUSES, Run, RunStatus

ROLLOUT_KINDS = (PROVISION_KIND, SMOKE_KIND, TEARDOWN_KIND)
COST_TAG_KEY = "Source"  # the cost allocation tag the monthly review groups by
_KEY_RE = re.compile(r"^\s*(?:data-)?(\d+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class EnvironmentState:
    environment: Environment
    state: str  # not started, provisioning, provisioned, smoke testing, live, failed, …
    # Live: when the passing smoke test that began the current live stretch finished.
    live_since: datetime | None = None
    # When a smoke test first passed here (the source first went live), live now or not.
    first_live_at: datetime | None = None
    live_run_id: int | None = None  # that passing smoke test
    last_run_id: int | None = None

    @property
    def is_live(self) -> bool:
        return self.state == "live"


def rollout_state(last: Run | None) -> str:
    """The state an environment's newest rollout run leaves it in (no queries). A rollout
    run that waits with no time to wake at waits for a person: in production, the second
    engineer's confirmation (`runs.confirm`)."""
    if last is None:
        return "not started"
    if last.status == RunStatus.FAILED:
        return "failed"
    if last.status == RunStatus.CANCELLED:
        return "cancelled"
    if last.status == RunStatus.WAITING and last.wake_at is None:
        return "awaiting confirmation"
    active = last.status in ACTIVE_RUN_STATUSES
    return {
        PROVISION_KIND: "provisioning" if active else "provisioned",
        SMOKE_KIND: "smoke testing" if active else "live",
        TEARDOWN_KIND: "tearing down" if active else "torn down",
    }[last.kind]


def _passed(run: Run) -> bool:
    return run.kind == SMOKE_KIND and run.status == RunStatus.SUCCEEDED


def environment_state(environment: Environment, runs: list[Run]) -> EnvironmentState:
    """One environment's state from its rollout runs, oldest first."""
    last = runs[-1] if runs else None
    stretch = []
    for run in reversed(runs):
        if not _passed(run):
            break
        stretch.append(run)
    passed = [r.finished_at for r in runs if _passed(r) and r.finished_at]
    return EnvironmentState(
        environment=environment,
        state=rollout_state(last),
        live_since=stretch[-1].finished_at if stretch else None,
        first_live_at=min(passed) if passed else None,
        live_run_id=stretch[-1].pk if stretch else None,
        last_run_id=last.pk if last else None,
    )


def environment_states(
    request_ids: Iterable[int] | None = None, environments: Iterable[Environment] | None = None
) -> dict[int, list[EnvironmentState]]:
    """{request id: each environment's state, in rollout order} in one query of runs (and one
    of environments unless given). Requests without any rollout run are left out."""
    envs = list(Environment.objects.all() if environments is None else environments)
    runs = Run.objects.filter(
        subject_type=ContentType.objects.get_for_model(OnboardingRequest), kind__in=ROLLOUT_KINDS
    )
    if request_ids is not None:
        runs = runs.filter(subject_id__in=[str(pk) for pk in request_ids])
    grouped: dict[int, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    fields = (
        "pk",
        "kind",
        "status",
        "params",
        "subject_id",
        "created_at",
        "finished_at",
        "wake_at",
    )
    for run in runs.only(*fields).order_by("created_at", "pk"):
        grouped[int(run.subject_id)][str(run.params.get("environment", ""))].append(run)
    return {
        request_id: [environment_state(env, by_env.get(env.name, [])) for env in envs]
        for request_id, by_env in grouped.items()
    }


# --- the catalog ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogEntry:
    request: OnboardingRequest
    environments: list[EnvironmentState]
    # (environment name, s3:// URI of the registered schema) for each live environment
    schema_locations: list[tuple[str, str]]
    cost_tag: str  # "Source=<name>"

    @property
    def live_environments(self) -> list[EnvironmentState]:
        return [e for e in self.environments if e.is_live]


@dataclass(frozen=True)
class Catalog:
    entries: list[CatalogEntry]
    live_count: int  # sources live somewhere, before the search
    query: str


def _search(q: str) -> Q:
    match = (
        Q(source_name__icontains=q)
        | Q(description__icontains=q)
        | Q(owner_team__icontains=q)
        | Q(downstream_consumers__icontains=q)
    )
    key = _KEY_RE.match(q)
    return match | Q(number=int(key.group(1))) if key else match


def catalog_entries(*, q: str = "") -> Catalog:
    """Every source live in at least one environment, by source name; `q` finds text in the
    name, description, owner team or consumers, or a key (DATA-12). Four queries at most."""
    from onboarding.services import environment_plans, spec_snapshot

    envs = list(Environment.objects.all())
    states = environment_states(environments=envs)
    live_ids = [pk for pk, rows in states.items() if any(e.is_live for e in rows)]
    q = q.strip()
    requests = OnboardingRequest.objects.filter(pk__in=live_ids).select_related("requested_by")
    if q:
        requests = requests.filter(_search(q))
    entries = []
    for request in requests.order_by("source_name", "number"):
        rows = states[request.pk]
        live = [e.environment for e in rows if e.is_live]
        plans = environment_plans(spec=spec_snapshot(request), environments=live)
        locations = [(p.environment.name, p.plan["schema_object"]["uri"]) for p in plans if p.plan]
        tags = next((p.plan["tags"] for p in plans if p.plan), {})
        cost_tag = f"{COST_TAG_KEY}={tags.get(COST_TAG_KEY, request.source_name)}"
        entries.append(CatalogEntry(request, rows, locations, cost_tag))
    return Catalog(entries=entries, live_count=len(live_ids), query=q)


# --- DATA_CATALOG.md -----------------------------------------------------------------------------


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks inside `text`."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def pretty_schema(schema_text: str) -> str:
    try:
        return json.dumps(json.loads(schema_text), indent=2, ensure_ascii=False)
    except ValueError:
        return schema_text.strip()


def _lines(text: str) -> str:
    """Multi-line text as one list item: continuation lines indented under it."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "\n  ".join(lines) or "—"


def _environments_text(entry: CatalogEntry) -> str:
    parts = []
    for env in entry.environments:
        text = f"{env.environment.name}: {env.state}"
        if env.live_since:
            text += f" since {env.live_since:%Y-%m-%d %H:%M} UTC"
        parts.append(text)
    return "; ".join(parts)


def ticket_url(request: OnboardingRequest) -> str:
    return absolute_url(reverse("onboarding:request-detail", args=[request.number]))


def catalog_markdown(entries: Iterable[CatalogEntry], *, generated_at: datetime) -> str:
    """DATA_CATALOG.md: a header, then one section per source in the order given."""
    entries = list(entries)
    out = [
        "# Data catalog",
        "",
        f"Sources live in at least one environment: {len(entries)}. Generated by Onramp on "
        f"{generated_at:%Y-%m-%d %H:%M} UTC from the onboarding tickets (SOP-001 step 8); "
        "the tickets are the source of truth, so change them rather than this file.",
        "",
    ]
    if entries:
        out += ["## Contents", ""]
        out += [f"- [{e.request.source_name}](#{e.request.source_name})" for e in entries]
        out.append("")
    for entry in entries:
        r = entry.request
        schema = pretty_schema(r.schema_text)
        fence = _fence(schema)
        retention = f"{r.retention_days} days" if r.retention_days else "not stated"
        if r.retention_legal_basis:
            retention += f" ({r.retention_legal_basis})"
        locations = ", ".join(f"`{uri}` ({env})" for env, uri in entry.schema_locations)
        out += [
            f"## {r.source_name}",
            "",
            _lines(r.description) if r.description.strip() else "_No description._",
            "",
            f"- **Ticket:** [{r.key}]({ticket_url(r)})",
            f"- **Owner:** {r.owner_team or 'not stated'}",
            f"- **Format:** {r.get_data_format_display() or 'not stated'}",
            f"- **Latency SLA:** {r.get_latency_sla_display() or 'not stated'}",
            f"- **Retention:** {retention}",
            f"- **Sensitivity:** {r.get_sensitivity_display()}",
            f"- **Downstream consumers:** {_lines(r.downstream_consumers)}",
            f"- **Environments:** {_environments_text(entry)}",
            f"- **Cost tag:** `{entry.cost_tag}`",
            "",
            f"### Schema (version {r.schema_version})",
            "",
            f"Registered at {locations or 'no live environment'}.",
            "",
            f"{fence}json",
            schema,
            fence,
            "",
        ]
    return "\n".join(out)
