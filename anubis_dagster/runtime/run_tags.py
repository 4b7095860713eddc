"""The tags every Anubis run carries, so the Runs page answers "what did this run do, and for
which integration?" whoever launched it (a sensor, a schedule, `anubis run`, the Launchpad).

- `anubis/integration`: the integration's key, or `all` for runs that serve every integration
  (intake, lookup, retention, the names import);
- `anubis/action`: deliver, check, requeue, retry_now, dry_run, lookup, intake, health, digest,
  retention, import_names, pause, resume, privacy_export, privacy_erase, shadow, shadow_report,
  go_live, takeover, legacy_import.

They come from the job definition (static tags) or from the partition (partitioned config
tags), never from whoever launches the run: the Launchpad adds none. A delivery run whose
Launchpad config asks for a requeue, retry-now or dry run names that action as soon as it reads
its config (`retag_run`), since the config is only known once the run exists.
"""

from __future__ import annotations

import dagster as dg

INTEGRATION_TAG = "anubis/integration"
ACTION_TAG = "anubis/action"
#: the integration tag of runs that are not about one integration
ALL_INTEGRATIONS = "all"


def run_tags(action: str, integration: str = ALL_INTEGRATIONS) -> dict[str, str]:
    return {INTEGRATION_TAG: integration, ACTION_TAG: action}


def retag_run(context: dg.OpExecutionContext | dg.AssetExecutionContext, **tags: str) -> None:
    """Set `anubis/<name>` tags on the running run (e.g. action="requeue"), if they differ.
    Also for assets materialised from the asset graph, whose runs (Dagster's implicit asset
    job) carry no tag of ours."""
    wanted = {f"anubis/{name}": value for name, value in tags.items()}
    run = context.instance.get_run_by_id(context.run_id)
    if run is None or all(run.tags.get(k) == v for k, v in wanted.items()):
        return
    context.instance.add_run_tags(context.run_id, wanted)
