"""What every settings model shares, the core's and each integration's: `EnvironmentModel`
(variables read from the environment, one field each, shown by the doctor and the README's
table), `EnvironmentSettings` (an integration's), the field helpers, and `SettingsError`, whose
message names every problem in a settings file's words."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from anubis_dagster.settings.checks import check_http_url, check_quota, hide_password

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(ValueError):
    """The environment holds invalid settings. The message lists every problem, one per line,
    each starting with the variable's name; it never carries a secret's value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid configuration:\n" + "\n".join(f"  - {problem}" for problem in problems)
        )


def _field(
    default: Any,
    meaning: str,
    *,
    group: str,
    shown_default: str | None = None,
    **constraints: Any,
) -> Any:
    """A settings field with what the README table needs: its group and shown default."""
    extra: dict[str, Any] = {"group": group, "shown_default": shown_default}
    return Field(default=default, description=meaning, json_schema_extra=extra, **constraints)


def _seconds(default: float, meaning: str, *, group: str, minimum: float = 0.0) -> Any:
    """A duration in seconds: a finite number, strictly above `minimum` (default: > 0)."""
    return _field(default, meaning, group=group, gt=minimum, allow_inf_nan=False)


#: the field helpers, for the integrations' environment models
setting = _field
seconds_setting = _seconds


class EnvironmentModel(BaseModel):
    """Variables read from the environment, one field each, named as the variable in lower
    case: the core's `Settings` and each integration's `EnvironmentSettings`."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    #: variables holding a database URL: the doctor shows them with the password hidden
    password_urls: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def own_variables(cls) -> tuple[str, ...]:
        """This model's variables, in declaration order."""
        return tuple(name.upper() for name in cls.model_fields)

    @classmethod
    def own_secret_variables(cls) -> frozenset[str]:
        return frozenset(
            name.upper()
            for name, info in cls.model_fields.items()
            if "SecretStr" in str(info.annotation)
        )

    @classmethod
    def read(cls, env: Mapping[str, str]) -> tuple[Self | None, list[str]]:
        """The model from `env` (empty = unset), or None and every problem found."""
        values = {
            name.lower(): env[name] for name in cls.own_variables() if env.get(name, "").strip()
        }
        try:
            return cls.model_validate({k: v.strip() for k, v in values.items()}), []
        except ValidationError as exc:
            return None, _problems(cls, exc, values)

    def own_secret_values(self) -> list[str]:
        return [
            field.get_secret_value()
            for name in sorted(self.own_secret_variables())
            if (field := getattr(self, name.lower())) is not None
        ]

    def own_effective(self) -> Iterator[tuple[str, str, str]]:
        """(variable, shown value, source): secrets as `set`, URL passwords hidden."""
        for name in type(self).model_fields:
            variable = name.upper()
            value = getattr(self, name)
            source = "env" if name in self.model_fields_set else "default"
            if value is None:
                shown = "unset"
            elif variable in self.password_urls:
                shown = hide_password(value.get_secret_value())
            elif isinstance(value, SecretStr):
                shown = "set"
            else:
                shown = str(value)
            yield variable, shown, source

    @classmethod
    def table_rows(cls) -> list[str]:
        """This model's rows of the README's configuration table."""
        lines = []
        secrets = cls.own_secret_variables()
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            shown = extra.get("shown_default")
            if shown is None:
                shown = "—" if info.default is None else f"`{info.default}`"
            meaning = info.description or ""
            if name.upper() in secrets and "secret" not in meaning:
                meaning += " (secret)"
            lines.append(f"| `{name.upper()}` | {shown} | {meaning} |")
        return lines


class EnvironmentSettings(EnvironmentModel):
    """The environment variables of one integration package, declared in its
    `environment.py` and decorated with `@register_environment`; `Settings` composes them.

    Every variable starts with one of `prefixes` (so a mistyped one is reported). Checked by
    name for every field: one ending `_rate_limit` is a quota `REQUESTS/SECONDS`, one holding
    `_url` an http(s) URL (a `PartnerApiResource` reads `<settings_prefix>_rate_limit` and
    `<settings_prefix>_timeout_seconds`, and its `credential(...)` variables, from here)."""

    #: the prefixes of its variables, e.g. `("API_ACME_",)`
    prefixes: ClassVar[tuple[str, ...]] = ()

    @field_validator("*")
    @classmethod
    def _by_name(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name or ""
        if isinstance(value, str) and name.endswith("_rate_limit"):
            check_quota(value)
        elif isinstance(value, str) and "_url" in name:
            check_http_url(value)
        return value


Environment = TypeVar("Environment", bound=EnvironmentSettings)


def _problems(
    model: type[EnvironmentModel], exc: ValidationError, values: Mapping[str, str]
) -> list[str]:
    """One line per error: `VARIABLE: what is wrong (got 'value')`; secrets never echoed."""
    secrets = model.own_secret_variables()
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        message = str(error["msg"]).removeprefix("Value error, ")
        if not loc:  # a check across fields names its variables itself
            problems.append(message)
            continue
        variable = loc[0].upper()
        raw = values.get(loc[0])
        shown = "" if raw is None or variable in secrets else f" (got {raw!r})"
        if error["type"] in _READABLE:
            message = _READABLE[error["type"]].format(**error.get("ctx", {}))
        if variable.endswith("_SECONDS") and error["type"] in _SECONDS_ERRORS:
            message = _seconds_message(model, loc[0])
        problems.append(f"{variable}: {message}{shown}")
    return problems


#: pydantic's wording for the common errors, in the words of a settings file
_READABLE = {
    "greater_than": "must be above {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "literal_error": "must be one of " + ", ".join(LOG_LEVELS),
    "bool_parsing": "must be true or false",
}


_SECONDS_ERRORS = frozenset(
    {"float_parsing", "finite_number", "greater_than", "greater_than_equal"}
)


def _seconds_message(model: type[EnvironmentModel], name: str) -> str:
    """A duration's error in one wording, whatever pydantic found wrong with it."""
    strictly_positive = any(
        getattr(rule, "gt", None) == 0 for rule in model.model_fields[name].metadata
    )
    if strictly_positive:
        return "must be a positive number of seconds"
    return "must be a number of seconds, 0 or more"
