"""The sandbox: embedded AWS (moto on loopback) for the default set-up and for tests.

- `portal.sandbox.server.start_sandbox_server(host, port)` runs it (`manage.py sandbox`
  runs it in the foreground and seeds it);
- `portal.sandbox.seed.seed(environments)` creates the existing pipeline in each
  environment, through `portal.aws.client`;
- `portal.sandbox.faults.inject(...)` / `clear(...)` make calls fail on purpose;
- `portal.sandbox.costs` is the Cost Explorer stand-in.
- `portal.sandbox.state` keeps its AWS state across restarts (a snapshot of moto's
  backends under settings.SANDBOX_STATE_DIR).

The production code path is the same with or without the sandbox: nothing outside this
package knows it is there except settings.AWS_ENDPOINT_URL.
"""
