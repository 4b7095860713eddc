"""Dagster retry policy shared by every op.

Ops are written to be safe to run twice (idempotent intake, leases and the "being sent" marker
for deliveries), so an unexpected exception — a database failover, a killed worker — is retried
by Dagster a couple of times before the run fails and alerts. `ANUBIS_OP_RETRY_DELAY_SECONDS`
shortens the wait (the test suite sets it to 0).
"""

from __future__ import annotations

import dagster as dg

from anubis_dagster.settings import get_settings

OP_RETRY_POLICY = dg.RetryPolicy(
    max_retries=2,
    delay=get_settings().anubis_op_retry_delay_seconds,
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)
