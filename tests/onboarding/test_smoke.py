"""The smoke test end to end against the sandbox pipeline (portal/sandbox/pipeline.py):
valid samples uploaded under incoming/smoke/<run>/, executions watched through Step
Functions, processed output and metadata checked, latency against the SLA."""

from __future__ import annotations

from onboarding import kinds
from onboarding.rules import p95
from onboarding.steps.smoke import smoke_samples
from tests.onboarding.test_provisioning import (
    approved_request,
    clients,
    drive,
    engineer_fixture,  # noqa: F401 - fixture
    env_named,
    media_fixture,  # noqa: F401 - fixture
    plan_of,
    provision,
    start,
)


class SmokeTests:
    def test_it_passes_end_to_end_against_the_sandbox_pipeline(
        self, environments, personas, engineer
    ):
        request = approved_request(personas, latency_sla="realtime")
        env = env_named(environments)
        plan = plan_of(request, env)
        assert provision(request, engineer).status == "succeeded"

        run = drive(start(kinds.smoke_test, request, engineer))
        assert run.status == "succeeded", run.error
        result = run.steps.get(key="onboarding.smoke_verify").output
        assert result["passed"] is True
        assert result["sla_seconds"] == 10.0
        assert 0 <= result["p95_seconds"] < 10.0
        # The 9 valid samples, not the one marked malformed.
        assert len(result["files"]) == 9
        for row in result["files"]:
            assert row["key"].startswith(f"incoming/smoke/{run.pk}/valid-")
            assert row["status"] == "SUCCEEDED"
            assert row["metadata_status"] == "SUCCEEDED"
            assert row["output"].startswith(
                f"s3://{env.resource(env.processed_bucket_name)}/source={plan['source']}/"
            )
            assert row["pipeline_latency_ms"] is not None
        # The samples are in the raw bucket, where the producer would have put them.
        listed = clients(env)("s3").list_objects_v2(
            Bucket=plan["bucket"]["name"], Prefix=f"incoming/smoke/{run.pk}/"
        )
        assert listed["KeyCount"] == 9

    def test_a_file_the_pipeline_rejects_fails_the_run(self, environments, personas, engineer):
        request = approved_request(personas)
        env = env_named(environments)
        assert provision(request, engineer).status == "succeeded"
        # The schema registered for the source now refuses every sample.
        plan = plan_of(request, env)
        schema = plan["schema_object"]
        clients(env)("s3").put_object(
            Bucket=schema["bucket"],
            Key=schema["key"],
            Body=b'{"type": "object", "required": ["no_such_field"]}',
            ContentType="application/json",
        )

        run = drive(start(kinds.smoke_test, request, engineer))
        assert run.status == "failed"
        failed = run.steps.get(status="failed")
        assert failed.key == "onboarding.smoke_wait"
        assert "did not succeed" in failed.error and "valid-00.ndjson (FAILED" in failed.error

    def test_it_refuses_before_the_environment_is_provisioned(
        self, environments, personas, engineer
    ):
        request = approved_request(personas)
        run = drive(start(kinds.smoke_test, request, engineer))
        assert run.status == "failed"
        assert "provision dev first" in run.steps.get(status="failed").error


class SmokeSelectionTests:
    def test_production_gets_five_valid_files_others_all(self, environments, personas):
        request = approved_request(personas)
        prod, dev = env_named(environments, "prod"), env_named(environments, "dev")
        assert prod.is_production and not dev.is_production
        assert len(smoke_samples(request, prod)) == 5
        chosen = smoke_samples(request, dev)
        assert len(chosen) == 9
        assert not any(sample.expected_malformed for sample in chosen)

    def test_p95_is_the_nearest_rank(self):
        assert p95([1.0]) == 1.0
        assert p95([float(i) for i in range(1, 21)]) == 19.0
        assert p95([float(i) for i in range(1, 101)]) == 95.0
