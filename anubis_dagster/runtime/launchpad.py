"""Launchpad configs whose own validation runs before the run exists.

Why: Dagster checks a run config against its schema's structure (a string is a string, an id an
integer) when a run is launched, but the pydantic validators of a `dg.Config` class (an ISO
date, an id above 0, a lookup key that parses) only ran in the op, after the run was created,
queued and started. `checked_schema(Model)` turns the class's fields into a config schema whose
scalars (and list items) are post-processed by the class's own validation of that field. Dagster
post-processes a run config when it builds the run's execution plan, which happens in the code
server before any run is created, whoever asks for it: the Launchpad (GraphQL launch), a sensor,
a schedule, `anubis run`, `execute_in_process`. A bad value is refused there with the field's
message; nothing is queued.

The class stays the single source of truth: the op reads `Model.model_validate(context.op_config)`.
`ConfigType.post_process` and `PostProcessingError` are Dagster's documented hook for custom
validation of config values ("throw a PostProcessingError").
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import dagster as dg
from dagster._config import ConfigScalar, ConfigScalarKind, ConfigTypeKind
from dagster._config.errors import PostProcessingError
from pydantic import BaseModel, ValidationError

from anubis_dagster.core.masking import mask_text

_KINDS = {"String": ConfigScalarKind.STRING, "Int": ConfigScalarKind.INT}


class _CheckedScalar(ConfigScalar):
    """One field's scalar (or list item): valid for Dagster's structure check as a string or an
    integer, then validated by the model's own rules for that field."""

    def __init__(self, model: type[BaseModel], name: str, kind: str, *, item: bool) -> None:
        super().__init__(
            key=f"anubis.{model.__name__}.{name}" + ("[]" if item else ""),
            # type names must be unique within a job; the Launchpad shows this one
            given_name=f"{kind} ({model.__name__}.{name}{'[]' if item else ''})",
            scalar_kind=_KINDS[kind],
        )
        self._model = model
        self._name = name
        self._item = item

    def post_process(self, value: Any) -> Any:
        problem = field_problem(self._model, self._name, [value] if self._item else value)
        if problem:
            # the value is the operator's, but the message may be logged: masked (a CPF)
            raise PostProcessingError(f"{self._name}: {problem} (got {mask_text(repr(value))})")
        return value


@cache
def _checked_scalar(model: type[BaseModel], name: str, kind: str, item: bool) -> _CheckedScalar:
    """One instance per field: a job refuses two different types with the same name."""
    return _CheckedScalar(model, name, kind, item=item)


def field_problem(model: type[BaseModel], name: str, value: Any) -> str | None:
    """What the model finds wrong with `value` for its field `name` (None: nothing). Other
    fields' errors (e.g. a required one not given here) are not this field's business."""
    try:
        model.model_validate({name: value})
    except ValidationError as exc:
        messages = [
            str(error["msg"]).removeprefix("Value error, ")
            for error in exc.errors()
            if error["loc"] and error["loc"][0] == name
        ]
        if messages:
            return "; ".join(messages)
    return None


def _checked_type(model: type[BaseModel], name: str, config_type: Any, *, item: bool) -> Any:
    """The field's Dagster type with every string/integer scalar replaced by a checked one."""
    kind = config_type.kind
    if kind == ConfigTypeKind.ARRAY:
        return dg.Array(_checked_type(model, name, config_type.inner_type, item=True))
    if kind == ConfigTypeKind.NONEABLE:
        return dg.Noneable(_checked_type(model, name, config_type.inner_type, item=item))
    # `str` and `int` fields are String/Int scalars or their env-var unions (StringSource)
    scalar = config_type.scalar_type if kind == ConfigTypeKind.SCALAR_UNION else config_type
    if scalar.kind == ConfigTypeKind.SCALAR and scalar.given_name in _KINDS:
        return _checked_scalar(model, name, scalar.given_name, item)
    return config_type  # booleans, floats and nested shapes: the structure check is enough


def checked_schema(model: type[dg.Config]) -> Mapping[str, dg.Field]:
    """The op config schema of `model`, each field checked at launch by the model's rules."""
    fields = {}
    for name, field in model.to_fields_dict().items():
        extra: dict[str, Any] = (
            {"default_value": field.default_value} if (field.default_provided) else {}
        )
        fields[name] = dg.Field(
            _checked_type(model, name, field.config_type, item=False),
            description=field.description,
            is_required=field.is_required,
            **extra,
        )
    return fields
