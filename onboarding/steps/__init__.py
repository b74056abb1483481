"""The steps of onboarding's run kinds (declared in `onboarding.kinds`), one module per kind:
`validate`, `plan_diff`, `provision`, `smoke`, `drift`, `teardown`, `criteria`, `volume`.

A step is idempotent and reads what it needs from the run's request (`common`). It may use
the pure rules (`onboarding.rules`), the request's current state
(`onboarding.request_state`) and the AWS helpers (`onboarding.aws`); it never imports the
services or selectors, which sit above it.
"""
