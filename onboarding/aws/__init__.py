"""Onboarding's AWS work, below the steps that call it: read a plan's resources (`live`),
compare them with the plan (`diff`), apply the plan (`apply`), take it down (`remove`) and
check a bucket's security baseline (`baseline`). No business rules live here: what may be
applied, and when, is decided by the services and checked by the steps."""
