"""The catalog of live sources (SOP-001 step 8): every source live in at least one
environment, where it stands in each, where its schema is registered and its cost tag.

A source is live in an environment when its newest rollout run there is a smoke test that
passed (`environment_state`). The catalog reads the states of many requests from one query
of their runs, so the page runs a constant number of queries however many sources it lists.
`onboarding.catalog` writes DATA_CATALOG.md from these entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db.models import Q

from onboarding.models import OnboardingRequest
from onboarding.rules import environment_plans, spec_snapshot
from onboarding.selectors.rollout import EnvironmentState, environment_states
from portal.models import Environment

COST_TAG_KEY = "Source"  # the cost allocation tag the monthly review groups by
_KEY_RE = re.compile(r"^\s*(?:data-)?(\d+)\s*$", re.IGNORECASE)


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
        tags: dict[str, str] = next((p.plan["tags"] for p in plans if p.plan), {})
        cost_tag = f"{COST_TAG_KEY}={tags.get(COST_TAG_KEY, request.source_name)}"
        entries.append(CatalogEntry(request, rows, locations, cost_tag))
    return Catalog(entries=entries, live_count=len(live_ids), query=q)
