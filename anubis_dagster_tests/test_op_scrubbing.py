"""Every op scrubs its exceptions; the names import reads no path typed at launch (issue 22,
item 4).

A run failure stores the text of the exception and of its causes in Dagster's event log, and
the failure alert quotes it: every op and asset of the definitions is wrapped by
`policies.retry_unexpected_errors` or `policies.scrub_errors`, which mask it first.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from anubis_dagster.console import jobs as console_jobs
from anubis_dagster.definitions import build_definitions
from anubis_dagster.reference_data.names import SAMPLE_CSV
from anubis_dagster.runtime.policies import SCRUBBED


def op_functions(defs: dg.Definitions) -> dict[str, object]:
    found: dict[str, object] = {}
    for job in defs.resolve_all_job_defs():
        for op_def in job.graph.iterate_op_defs():
            found[op_def.name] = op_def.compute_fn.decorated_fn  # type: ignore[union-attr]
    return found


def test_every_op_and_asset_of_the_definitions_scrubs_its_exceptions(anubis_env: str) -> None:
    functions = op_functions(build_definitions())
    # the ones the review named, and the delivery and intake ops
    for name in ("import_ibge_names", "find_student_op", "set_pause", "fix_data", "register"):
        assert any(n.startswith(name) for n in functions), (name, sorted(functions))
    assert len(functions) >= 12
    unwrapped = sorted(n for n, fn in functions.items() if not getattr(fn, SCRUBBED, False))
    assert unwrapped == []


def test_a_failing_op_stores_masked_text_only(
    anubis_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    personal = ("Maria Souza", ".".join(["529", "982", "247-25"]), "-".join(["97540", "5666"]))

    def explode(*_args: object, **_kwargs: object) -> str:
        # built at run time: the traceback's source lines must not show it either
        name, cpf, phone = personal
        raise RuntimeError(f"lookup of Candidata {name}, CPF {cpf}, (11) {phone}")

    monkeypatch.setattr(console_jobs, "find_student", explode)
    job = build_definitions().resolve_job_def("student_lookup")
    result = job.execute_in_process(
        run_config={"ops": {"find_student_op": {"config": {"key": "#1"}}}}, raise_on_error=False
    )
    assert not result.success
    failure = result.get_run_failure_event()
    step_failures = [e for e in result.all_events if e.is_step_failure]
    texts = [str(failure.event_specific_data), *(str(e.event_specific_data) for e in step_failures)]
    blob = "\n".join(texts)
    assert "lookup of Candidata M. S." in blob
    for piece in personal:
        assert piece not in blob


def test_the_names_import_reads_only_the_bundled_file_or_the_setting(
    anubis_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = build_definitions().resolve_job_def("import_names_job")

    def run(path: str) -> dg.ExecuteInProcessResult:
        config = {"ops": {"import_ibge_names": {"config": {"path": path}}}}
        return job.execute_in_process(run_config=config, raise_on_error=False)

    secret = tmp_path / "secret.csv"
    secret.write_text("name,gender,frequency\nANUBIS,M,1\n")
    refused = run(str(secret))
    assert not refused.success
    (failure,) = [e for e in refused.all_events if e.is_step_failure]
    assert "reads only" in str(failure.event_specific_data)
    assert "ANUBIS_NAMES_CSV" in str(failure.event_specific_data)
    assert run("/etc/passwd").success is False
    assert run("").success and run(str(SAMPLE_CSV)).success
    # the operator allows another file through the setting
    monkeypatch.setenv("ANUBIS_NAMES_CSV", str(secret))
    done = run("")
    assert done.success and done.output_for_node("import_ibge_names") == 1
