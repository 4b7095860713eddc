"""The shared kit of the IES sandbox servers.

The real IES APIs can't be reached from here, so each integration ships an HTTP sandbox that
follows the partner's contract. What every sandbox needs lives in this module, so that the Kroton
and Estácio sandboxes only hold their own endpoints and rules:

- a threaded JSON HTTP server on the standard library that runs in a background thread (tests,
  port 0 allowed) or in the foreground (`anubis-sandbox serve ...`, until SIGINT/SIGTERM);
- a sliding-window rate limiter per named API bucket, answering 429 with `Retry-After`;
- fault injection driven by a seeded `random.Random`, so a failing run can be replayed:
  5xx errors, added latency, requests held until the client times out, malformed bodies, and
  lost answers (the request is processed, then the connection closes without an answer, or
  with the body cut short);
- a request log and statistics, so tests and the demo can check what a client really sent;
- control endpoints under `/__sandbox/` (never rate-limited, faulted or logged) to read the log,
  reset the state and change settings at run time.

A normal request goes through: rate limit (429) → fault injection → authentication → handler.
Every non-control request counts in its bucket, token and authentication calls included.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import random
import re
import signal
import socket
import threading
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self

from stdnum.br import cpf as stdnum_cpf

CONTROL_PREFIX = "/__sandbox/"
#: The request log keeps the newest entries only; statistics are counted apart and never lost.
MAX_LOGGED_REQUESTS = 50_000

Clock = Callable[[], float]


# --------------------------------------------------------------------------------------------
# Small validation helpers shared by the sandboxes
# --------------------------------------------------------------------------------------------
BRAZILIAN_STATES = frozenset(
    ("AC", "AL", "AP", "AM", "BA", "CE", "DF", "ES", "GO", "MA", "MT", "MS", "MG", "PA",
     "PB", "PR", "PE", "PI", "RJ", "RN", "RS", "RO", "RR", "SC", "SP", "SE", "TO")
)  # fmt: skip
MIN_BIRTH_DATE = date(1900, 1, 1)  # earlier dates are placeholders of old sign-up forms
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")


def only_digits(value: Any) -> str:
    return re.sub(r"\D", "", value) if isinstance(value, str) else ""


def is_valid_cpf(value: Any) -> bool:
    """True for a CPF with valid check digits, formatted (`378.457.608-70`) or digits only."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{3}\.?\d{3}\.?\d{3}-?\d{2}", value):
        return False
    number = only_digits(value)
    # stdnum accepts a repeated digit (111.111.111-11); the Receita Federal does not.
    return len(set(number)) > 1 and bool(stdnum_cpf.is_valid(number))


def plausible_birth_date(value: Any, date_format: str) -> date | None:
    """The date written in `value` (a strptime format giving 10 characters) when it lies between
    1900-01-01 and today, else None."""
    if not isinstance(value, str) or len(value) != 10:
        return None
    try:
        born = datetime.strptime(value, date_format).date()
    except ValueError:
        return None
    return born if MIN_BIRTH_DATE <= born <= date.today() else None


def is_email(value: Any) -> bool:
    return isinstance(value, str) and _EMAIL_RE.match(value) is not None


def is_blank(value: Any) -> bool:
    return not isinstance(value, str) or not value.strip()


def is_strict_int(value: Any) -> bool:
    """An integer that is not a bool (JSON `true` must not pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# Settings common to every sandbox
# --------------------------------------------------------------------------------------------
#: `--outage` values: off, answer 503, or hang past the client's timeout
OUTAGE_MODES = ("", "5xx", "hang")
#: the endpoints an outage spares: tokens are still served (the outage is behind the gateway)
OUTAGE_SPARES = frozenset({"token", "captacao_login"})


def setting(default: Any, help: str) -> Any:
    """A settings field with its command-line help (the CLI flags are built from the fields)."""
    return field(default=default, metadata={"help": help})


@dataclass
class SandboxSettings:
    """Fault injection and rate limits; each sandbox's settings subclass this.

    Every field can be changed at run time through `POST /__sandbox/config` and from the command
    line (`--error-rate 0.1`, `--api-rate-limit 10/60`, ...).
    """

    seed: int = setting(0, "seed of the random draws (faults, processing errors)")
    error_rate: float = setting(0.0, "fraction of requests answered 500/502/503")
    latency_ms: float = setting(0.0, "milliseconds added to every answer")
    timeout_rate: float = setting(0.0, "fraction of requests held for --hang-seconds")
    hang_seconds: float = setting(30.0, "how long a timeout fault holds the request")
    timeout_after_processing: bool = setting(
        False,
        "handle a timed-out request before holding it: the change happens, the answer is lost",
    )
    malformed_rate: float = setting(0.0, "fraction of requests answered 200 with a broken body")
    lost_answer_rate: float = setting(
        0.0, "fraction of requests processed, then the connection closed without an answer"
    )
    truncated_answer_rate: float = setting(
        0.0, "fraction of requests processed, then answered with the body cut short"
    )
    outage: str = setting(
        "",
        "partner-wide outage (issue 21): '5xx' answers 503 to every call but the token "
        "endpoint, 'hang' holds each for --hang-seconds then answers 504 (nothing processed); "
        "empty: off",
    )
    outage_seconds: float = setting(
        0.0, "the outage ends by itself this many seconds after it began (0: until switched off)"
    )
    fault_endpoints: str = setting(
        "", "comma-separated endpoint names the faults apply to, e.g. register (empty: all)"
    )
    #: bucket name -> "REQUESTS/SECONDS"; subclasses set their buckets' defaults.
    rate_limits: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        for settings_field in dataclasses.fields(self):
            value = getattr(self, settings_field.name)
            if settings_field.name.endswith("_rate") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{settings_field.name} must be between 0 and 1")
            is_number = is_strict_int(value) or isinstance(value, float)
            if is_number and value < 0:
                raise ValueError(f"{settings_field.name} must not be negative")
        if self.outage not in OUTAGE_MODES:
            raise ValueError(f"outage must be one of {', '.join(map(repr, OUTAGE_MODES))}")
        for bucket, limit in self.rate_limits.items():
            RateLimit.parse(limit, bucket)

    def patched(self, patch: Mapping[str, Any]) -> Self:
        """A copy with `patch` applied, each value type-checked against the field's default.

        `rate_limits` may be a mapping of some buckets, or one "N/S" string for all of them.
        """
        updated = copy.deepcopy(self)
        for key, value in patch.items():
            if key == "rate_limits":
                updated.rate_limits = _patched_rate_limits(self.rate_limits, value)
                continue
            if key not in {f.name for f in dataclasses.fields(self)}:
                raise ValueError(f"unknown setting {key!r}")
            setattr(updated, key, _coerced_like(self._field_defaults()[key], value, key))
        updated.validate()
        return updated

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __post_init__(self) -> None:
        # `KrotonSandboxSettings(processing_delay=2)` stores 2.0, so run-time patches see floats.
        for name, default in self._field_defaults().items():
            value = getattr(self, name)
            if isinstance(default, float) and is_strict_int(value):
                setattr(self, name, float(value))

    @classmethod
    def _field_defaults(cls) -> dict[str, Any]:
        return {
            f.name: f.default
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING
        }


def _patched_rate_limits(current: Mapping[str, str], value: Any) -> dict[str, str]:
    if isinstance(value, str):
        return dict.fromkeys(current, value)
    if not isinstance(value, Mapping):
        raise ValueError("rate_limits must be an object or a 'REQUESTS/SECONDS' string")
    unknown = set(value) - set(current)
    if unknown:
        raise ValueError(f"unknown rate-limit bucket(s): {', '.join(sorted(unknown))}")
    return {**current, **value}


def _coerced_like(current: Any, value: Any, key: str) -> Any:
    """`value` given the type of `current` (ints become floats, bools are never numbers), or
    ValueError."""
    if isinstance(current, bool):
        accepted = isinstance(value, bool)
    elif isinstance(current, int):
        accepted = is_strict_int(value)
    elif isinstance(current, float):
        accepted = is_strict_int(value) or isinstance(value, float)
    else:
        accepted = isinstance(value, type(current))
    if accepted:
        return float(value) if isinstance(current, float) else value
    raise ValueError(f"setting {key!r} must be a {type(current).__name__}")


# --------------------------------------------------------------------------------------------
# Sliding-window rate limiter
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RateLimit:
    requests: int
    seconds: float

    @classmethod
    def parse(cls, text: str, bucket: str = "") -> RateLimit:
        """`RateLimit.parse("100/300")`: at most 100 requests in any 300 seconds."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*", str(text))
        if not match or int(match[1]) < 1 or float(match[2]) <= 0:
            where = f" for bucket {bucket!r}" if bucket else ""
            raise ValueError(f"rate limit{where} must look like REQUESTS/SECONDS, e.g. 100/300")
        return cls(int(match[1]), float(match[2]))

    def __str__(self) -> str:
        return f"{self.requests}/{self.seconds:g}"


class SlidingWindowRateLimiter:
    """At most `requests` accepted calls in any `seconds` window, per bucket; thread-safe.

    Only accepted calls enter the window: a client hammering through its 429s does not push its
    own recovery further away. Buckets without a limit accept everything.
    """

    def __init__(self, limits: Mapping[str, RateLimit], clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._limits = dict(limits)
        self._accepted: dict[str, deque[float]] = {}
        self._max_in_window: dict[str, int] = {}

    def set_limits(self, limits: Mapping[str, RateLimit]) -> None:
        with self._lock:
            self._limits = dict(limits)

    def try_acquire(self, bucket: str) -> int | None:
        """None when the call is accepted, else the whole seconds to wait (Retry-After, >= 1)."""
        with self._lock:
            limit = self._limits.get(bucket)
            if limit is None:
                return None
            now = self._clock()
            window = self._accepted.setdefault(bucket, deque())
            while window and window[0] <= now - limit.seconds:
                window.popleft()
            if len(window) >= limit.requests:
                # The call fits once enough of the oldest accepted calls have left the window.
                frees_at = window[len(window) - limit.requests] + limit.seconds
                return max(1, math.ceil(frees_at - now))
            window.append(now)
            self._max_in_window[bucket] = max(self._max_in_window.get(bucket, 0), len(window))
            return None

    def max_in_window(self) -> dict[str, int]:
        """Per bucket, the most calls accepted in any one window since the last reset."""
        with self._lock:
            return {bucket: self._max_in_window.get(bucket, 0) for bucket in self._limits}

    def reset(self) -> None:
        with self._lock:
            self._accepted.clear()
            self._max_in_window.clear()


# --------------------------------------------------------------------------------------------
# Requests, answers and routes
# --------------------------------------------------------------------------------------------
@dataclass
class SandboxRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message  # case-insensitive
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # taken from the route's path template

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> Any:
        """The body parsed as JSON; ValueError when it is not JSON."""
        return json.loads(self.body.decode("utf-8"))

    def json_object(self) -> dict[str, Any] | None:
        """The body when it is a JSON object, else None."""
        try:
            parsed = self.json()
        except (ValueError, UnicodeDecodeError):
            return None
        return parsed if isinstance(parsed, dict) else None

    def form(self) -> dict[str, str]:
        """An `application/x-www-form-urlencoded` body (the last value of a repeated key wins)."""
        pairs = urllib.parse.parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return dict(pairs)


@dataclass
class Reply:
    """An answer: a JSON body (or `raw` bytes, for malformed faults) and how to log it."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: The log's outcome; None derives it from the status (see `default_outcome`).
    outcome: str | None = None
    raw: bytes | None = None
    #: how the answer is lost on the wire after the request was processed: "drop" closes the
    #: connection without a byte, "truncate" sends the headers and half the body
    cut: str | None = None

    def payload(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps(self.body, ensure_ascii=False).encode("utf-8")


def default_outcome(status: int) -> str:
    if 200 <= status < 300:
        return "ok"
    return {
        401: "unauthorized",
        400: "invalid",
        422: "invalid",
        404: "not_found",
        405: "not_allowed",
        409: "refused",
        429: "rate_limited",
    }.get(status, "error")


Handler = Callable[[SandboxRequest], Reply]
Authorizer = Callable[[SandboxRequest], Reply | None]


@dataclass(frozen=True)
class Route:
    """`path` is a template: `/inscricao/cpf/{cpf}` captures `cpf` into `request.params`."""

    method: str
    path: str
    name: str
    handler: Handler
    bucket: str = ""  # empty for control routes
    authorize: Authorizer | None = None  # answers a Reply to refuse the request

    def match(self, path: str) -> dict[str, str] | None:
        pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path)) + "$"
        found = re.match(pattern, path)
        return {k: urllib.parse.unquote(v) for k, v in found.groupdict().items()} if found else None


@dataclass(frozen=True)
class _Fault:
    kind: str  # "5xx", "timeout", "malformed", "drop" or "truncate"
    status: int = 200


_MALFORMED_BODIES = (
    b"<html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>",
    b'{"success": true, "status": "SUCC',  # cut in the middle, as a dropped connection does
)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------
class SandboxServer:
    """Base of a sandbox: subclasses declare `name`, `default_port`, `settings_class`,
    `default_bucket`, and implement `routes()`; they may add `control_routes()`, `reset_state()`,
    `extra_stats()` and `body_cpf()`.

    Handlers run one at a time under `self.lock`, so sandbox state needs no locking of its own;
    waiting (latency, timeouts) happens outside the lock.
    """

    name: ClassVar[str]
    default_port: ClassVar[int]
    settings_class: ClassVar[type[SandboxSettings]]
    #: Where requests to unknown paths are counted.
    default_bucket: ClassVar[str]

    def __init__(
        self,
        settings: SandboxSettings | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.clock = clock
        self.lock = threading.RLock()
        if settings is not None and not isinstance(settings, self.settings_class):
            raise TypeError(f"{type(self).__name__} needs {self.settings_class.__name__}")
        self._settings = settings if settings is not None else self.settings_class()
        self._settings.validate()
        self._initial_settings = copy.deepcopy(self._settings)
        self.random = random.Random(self._settings.seed)
        self.rate_limiter = SlidingWindowRateLimiter(self._parsed_rate_limits(), clock)
        self._routes = self.routes()
        self._control_routes = self._base_control_routes() + self.control_routes()
        self._log: deque[dict[str, Any]] = deque(maxlen=MAX_LOGGED_REQUESTS)
        self._seq = 0
        self._counts: dict[str, Counter[str]] = {}
        self._stopping = threading.Event()
        self._outage_since = time.monotonic()  # when the current outage began (`--outage`)
        self._httpd: _SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._reset_counters()
        self.reset_state()

    # -- what subclasses provide --------------------------------------------------------------
    def routes(self) -> list[Route]:
        raise NotImplementedError

    def control_routes(self) -> list[Route]:
        return []

    def reset_state(self) -> None:
        """Forget the sandbox's own state (tokens, registrations, ...)."""

    def extra_stats(self) -> dict[str, Any]:
        return {}

    def body_cpf(self, request: SandboxRequest) -> str | None:
        """The CPF a request names in its body, for the request log."""
        return None

    def rate_limited_body(self, retry_after: int) -> Any:
        """The body of a 429 (Azure API Management's wording by default)."""
        return {
            "statusCode": 429,
            "message": f"Rate limit is exceeded. Try again in {retry_after} seconds.",
        }

    # -- settings -----------------------------------------------------------------------------
    @property
    def settings(self) -> SandboxSettings:
        return self._settings

    def configure(self, **patch: Any) -> dict[str, Any]:
        """Change settings at run time (as `POST /__sandbox/config`); answers all settings."""
        with self.lock:
            updated = self._settings.patched(patch)
            if updated.seed != self._settings.seed:
                self.random.seed(updated.seed)
            if updated.outage and updated.outage != self._settings.outage:
                self._outage_since = time.monotonic()
            self._settings = updated
            self.rate_limiter.set_limits(self._parsed_rate_limits())
            return self._settings.as_dict()

    def _parsed_rate_limits(self) -> dict[str, RateLimit]:
        return {b: RateLimit.parse(text, b) for b, text in self._settings.rate_limits.items()}

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError(f"the {self.name} sandbox is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        """Serve in a background thread; answers the base URL (the real port when port=0)."""
        if self._httpd is not None:
            return self.base_url
        self._stopping.clear()
        self._httpd = _SandboxHTTPServer((self.host, self.port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.name}-sandbox",
            daemon=True,
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving; requests held by a timeout fault are released at once."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_until_signalled(self) -> None:
        """Serve in the foreground until SIGINT or SIGTERM."""
        stop_requested = threading.Event()
        previous = {
            sig: signal.signal(sig, lambda *_: stop_requested.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            print(f"{self.name} sandbox listening on {self.start()}", flush=True)
            while not stop_requested.wait(0.5):
                pass
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- Python access to the control data ----------------------------------------------------
    def requests_log(self, since: int = 0) -> list[dict[str, Any]]:
        """Logged requests with `seq` greater than `since`, oldest first. Each entry: `seq`,
        `ts` (arrival, Unix seconds), `method`, `path`, `api` (the bucket), `endpoint`,
        `status`, `outcome` and `cpf` (digits, or None)."""
        with self.lock:
            return [dict(entry) for entry in self._log if entry["seq"] > since]

    def stats(self) -> dict[str, Any]:
        with self.lock:
            counts = self._counts
            return {
                "requests": sum(counts["api"].values()),
                "by_api": dict(counts["api"]),
                "by_outcome": dict(counts["outcome"]),
                "by_status": dict(counts["status"]),
                "by_endpoint": dict(counts["endpoint"]),
                "by_api_outcome": {
                    api: {
                        key.split(" ", 1)[1]: n
                        for key, n in counts["api_outcome"].items()
                        if key.split(" ", 1)[0] == api
                    }
                    for api in counts["api"]
                },
                "rate_limited": counts["status"].get("429", 0),
                "max_in_window": self.rate_limiter.max_in_window(),
                "rate_limits": dict(self._settings.rate_limits),
                **self.extra_stats(),
            }

    def reset(self, settings: bool = False) -> None:
        """Clear all state: log, statistics, rate-limit windows and the sandbox's own data.

        The random generator is re-seeded, so a replay after a reset draws the same faults.
        With `settings=True` the settings the sandbox started with are restored too.
        """
        with self.lock:
            if settings:
                self._settings = copy.deepcopy(self._initial_settings)
                self.rate_limiter.set_limits(self._parsed_rate_limits())
            self.random.seed(self._settings.seed)
            self.rate_limiter.reset()
            self._log.clear()
            self._seq = 0
            self._reset_counters()
            self.reset_state()

    def _reset_counters(self) -> None:
        self._counts = {k: Counter() for k in ("api", "outcome", "status", "endpoint")}
        self._counts["api_outcome"] = Counter()

    # -- answering a request ------------------------------------------------------------------
    def answer(self, request: SandboxRequest) -> Reply:
        """The full treatment of one request (called by the HTTP layer, from its threads)."""
        if request.path.startswith(CONTROL_PREFIX):
            control = self._find_route(self._control_routes, request)
            if control is None:
                return Reply(404, {"error": "unknown control endpoint or method"})
            return self._run_handler(control, request)
        arrived_at = time.time()
        route = self._find_route(self._routes, request)
        bucket = route.bucket if route is not None else self.default_bucket
        reply = self._answer_counted(route, bucket, request)
        latency = self._settings.latency_ms / 1000
        if latency:
            self._stopping.wait(latency)
        self._record(request, route, bucket, reply, arrived_at)
        return reply

    def _answer_counted(self, route: Route | None, bucket: str, request: SandboxRequest) -> Reply:
        retry_after = self.rate_limiter.try_acquire(bucket)
        if retry_after is not None:
            return Reply(
                429, self.rate_limited_body(retry_after), {"Retry-After": str(retry_after)}
            )
        outage = self._outage_mode(route)
        if outage == "5xx":
            return Reply(503, {"message": "Service Unavailable (sandbox outage)"}, outcome="outage")
        if outage == "hang":
            self._stopping.wait(self._settings.hang_seconds)
            return Reply(504, {"message": "Gateway Timeout (sandbox outage)"}, outcome="outage")
        fault = self._draw_fault() if self._faults_apply(route) else None
        if fault is None:
            return self._authorized_answer(route, request)
        if fault.kind == "5xx":
            return Reply(
                fault.status,
                {"message": f"{HTTPStatus(fault.status).phrase} (sandbox fault)"},
                outcome="fault_5xx",
            )
        if fault.kind == "malformed":
            with self.lock:
                body = self.random.choice(_MALFORMED_BODIES)
            return Reply(200, raw=body, outcome="fault_malformed")
        if fault.kind in ("drop", "truncate"):
            # the partner acts on the request; only its answer is lost on the way back
            handled = self._authorized_answer(route, request)
            return dataclasses.replace(handled, cut=fault.kind, outcome=f"fault_{fault.kind}")
        return self._held_answer(route, request)

    def _held_answer(self, route: Route | None, request: SandboxRequest) -> Reply:
        """A timeout fault: hold the request so the client gives up."""
        if self._settings.timeout_after_processing:
            handled = self._authorized_answer(route, request)
            self._stopping.wait(self._settings.hang_seconds)
            return dataclasses.replace(handled, outcome="fault_timeout")
        self._stopping.wait(self._settings.hang_seconds)
        return Reply(504, {"message": "Gateway Timeout (sandbox fault)"}, outcome="fault_timeout")

    def _authorized_answer(self, route: Route | None, request: SandboxRequest) -> Reply:
        if route is None:
            allowed = [r.method for r in self._routes if r.match(request.path) is not None]
            if allowed:
                return Reply(405, {"message": "Method not allowed"}, {"Allow": ", ".join(allowed)})
            return Reply(404, {"message": "Resource not found"})
        if route.authorize is not None:
            with self.lock:
                refusal = route.authorize(request)
            if refusal is not None:
                return refusal
        return self._run_handler(route, request)

    def _run_handler(self, route: Route, request: SandboxRequest) -> Reply:
        with self.lock:
            try:
                return route.handler(request)
            except Exception as error:  # a sandbox bug answers 500 instead of a dropped socket
                return Reply(500, {"message": f"sandbox bug: {error!r}"}, outcome="sandbox_error")

    def _outage_mode(self, route: Route | None) -> str:
        """The outage this request meets ('' when none, or on a spared endpoint)."""
        s = self._settings
        if not s.outage or (route is not None and route.name in OUTAGE_SPARES):
            return ""
        if s.outage_seconds and time.monotonic() - self._outage_since > s.outage_seconds:
            return ""
        return s.outage

    def _faults_apply(self, route: Route | None) -> bool:
        chosen = {e.strip() for e in self._settings.fault_endpoints.split(",") if e.strip()}
        return not chosen or (route is not None and route.name in chosen)

    def _draw_fault(self) -> _Fault | None:
        """One draw per request; the fault kinds share it in this order (rates add up)."""
        s = self._settings
        rates = (
            ("5xx", s.error_rate),
            ("timeout", s.timeout_rate),
            ("malformed", s.malformed_rate),
            ("drop", s.lost_answer_rate),
            ("truncate", s.truncated_answer_rate),
        )
        if sum(rate for _, rate in rates) <= 0:
            return None
        threshold = 0.0
        with self.lock:
            draw = self.random.random()
            for kind, rate in rates:
                threshold += rate
                if draw < threshold:
                    status = self.random.choice((500, 502, 503)) if kind == "5xx" else 200
                    return _Fault(kind, status)
        return None

    def _find_route(self, routes: list[Route], request: SandboxRequest) -> Route | None:
        for route in routes:
            if route.method != request.method:
                continue
            params = route.match(request.path)
            if params is not None:
                request.params = params
                return route
        return None

    def _record(
        self,
        request: SandboxRequest,
        route: Route | None,
        bucket: str,
        reply: Reply,
        arrived_at: float,
    ) -> None:
        outcome = reply.outcome or default_outcome(reply.status)
        endpoint = route.name if route is not None else "unknown"
        cpf = only_digits(request.params.get("cpf")) or self._safe_body_cpf(request)
        with self.lock:
            self._seq += 1
            self._log.append(
                {
                    "seq": self._seq,
                    "ts": round(arrived_at, 3),
                    "method": request.method,
                    "path": request.path,
                    "api": bucket,
                    "endpoint": endpoint,
                    "status": reply.status,
                    "outcome": outcome,
                    "cpf": cpf or None,
                }
            )
            self._counts["api"][bucket] += 1
            self._counts["outcome"][outcome] += 1
            self._counts["status"][str(reply.status)] += 1
            self._counts["endpoint"][endpoint] += 1
            self._counts["api_outcome"][f"{bucket} {outcome}"] += 1

    def _safe_body_cpf(self, request: SandboxRequest) -> str | None:
        try:
            return only_digits(self.body_cpf(request)) or None
        except Exception:  # a log detail must never break an answer
            return None

    # -- control endpoints --------------------------------------------------------------------
    def _base_control_routes(self) -> list[Route]:
        return [
            Route("GET", "/__sandbox/health", "health", self._control_health),
            Route("GET", "/__sandbox/requests", "requests", self._control_requests),
            Route("GET", "/__sandbox/stats", "stats", lambda _: Reply(200, self.stats())),
            Route("POST", "/__sandbox/reset", "reset", self._control_reset),
            Route("GET", "/__sandbox/config", "config", lambda _: Reply(200, self._config())),
            Route("POST", "/__sandbox/config", "configure", self._control_configure),
        ]

    def _control_health(self, _request: SandboxRequest) -> Reply:
        return Reply(200, {"status": "ok", "sandbox": self.name})

    def _control_requests(self, request: SandboxRequest) -> Reply:
        since = request.query.get("since", ["0"])[-1]
        if not since.isdigit():
            return Reply(400, {"error": "since must be a sequence number"})
        return Reply(200, self.requests_log(int(since)))

    def _control_reset(self, request: SandboxRequest) -> Reply:
        options = request.json_object() or {}
        self.reset(settings=options.get("settings") is True)
        return Reply(200, {"reset": True, "settings": self._config()})

    def _control_configure(self, request: SandboxRequest) -> Reply:
        patch = request.json_object()
        if patch is None:
            return Reply(400, {"error": "the body must be a JSON object of settings"})
        try:
            return Reply(200, self.configure(**patch))
        except ValueError as error:
            return Reply(400, {"error": str(error)})

    def _config(self) -> dict[str, Any]:
        with self.lock:
            return self._settings.as_dict()


# --------------------------------------------------------------------------------------------
# HTTP plumbing (standard library)
# --------------------------------------------------------------------------------------------
class _SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: SandboxServer) -> None:
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _SandboxRequestHandler)

    def track(self, connection: socket.socket, is_open: bool) -> None:
        with self._connections_lock:
            if is_open:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Close kept-alive connections too, so a stopped sandbox really stops answering."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _SandboxRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the partners' gateways do
    disable_nagle_algorithm = True  # headers and body leave in two writes: don't wait for ACKs
    server: _SandboxHTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, is_open=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.track(self.connection, is_open=False)

    def _handle(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = SandboxRequest(
            method=self.command,
            path=url.path,
            query=urllib.parse.parse_qs(url.query),
            headers=self.headers,
            body=self.rfile.read(length) if length > 0 else b"",
        )
        reply = self.server.sandbox.answer(request)
        payload = reply.payload()
        if reply.cut is not None:
            self._lose_answer(reply, payload)
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. a timeout fault)

    def _lose_answer(self, reply: Reply, payload: bytes) -> None:
        """A lost-answer fault: no answer at all, or headers announcing the whole body and only
        half of it, then the connection closes (what a proxy or a crash does mid-answer)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            if reply.cut == "truncate":
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: request lines carry CPFs; the request log is the place to look."""


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def build_parser(sandbox_class: type[SandboxServer]) -> argparse.ArgumentParser:
    """Flags built from the settings fields (`latency_ms` -> `--latency-ms`), plus one
    `--<bucket>-rate-limit N/S` per bucket and `--rate-limit N/S` for all of them."""
    defaults = sandbox_class.settings_class()
    parser = argparse.ArgumentParser(
        prog=f"anubis-sandbox serve {sandbox_class.name.lower()}",
        description=f"Serve the {sandbox_class.name} sandbox until SIGINT/SIGTERM.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=sandbox_class.default_port, help="port")
    for settings_field in dataclasses.fields(defaults):
        if settings_field.name == "rate_limits":
            continue
        flag = "--" + settings_field.name.replace("_", "-")
        default = getattr(defaults, settings_field.name)
        help_text = settings_field.metadata.get("help", "")
        if isinstance(default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        else:
            parser.add_argument(flag, type=type(default), default=default, help=help_text)
    # SUPPRESS: an absent flag leaves no attribute, so a bucket's own flag can win over the
    # general one and the help does not print "default: None".
    parser.add_argument(
        "--rate-limit",
        metavar="N/S",
        default=argparse.SUPPRESS,
        help="one REQUESTS/SECONDS limit for every bucket",
    )
    for bucket, limit in defaults.rate_limits.items():
        parser.add_argument(
            f"--{bucket}-rate-limit",
            metavar="N/S",
            dest=f"rate_limit_{bucket}",
            default=argparse.SUPPRESS,
            help=f"requests/seconds allowed in the {bucket} bucket (default: {limit})",
        )
    return parser


def settings_from_args(
    settings_class: type[SandboxSettings], args: argparse.Namespace
) -> SandboxSettings:
    """Settings from parsed flags; a bucket's own flag wins over `--rate-limit`."""
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(settings_class)
        if f.name != "rate_limits"
    }
    general_limit = getattr(args, "rate_limit", None)
    values["rate_limits"] = {
        bucket: getattr(args, f"rate_limit_{bucket}", None) or general_limit or default
        for bucket, default in settings_class().rate_limits.items()
    }
    settings = settings_class(**values)
    settings.validate()
    return settings


def run_main(sandbox_class: type[SandboxServer], argv: list[str] | None = None) -> int:
    """The body of each sandbox's `main`: parse flags, then serve in the foreground."""
    parser = build_parser(sandbox_class)
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(sandbox_class.settings_class, args)
    except ValueError as error:
        parser.error(str(error))
    sandbox = sandbox_class(settings, host=args.host, port=args.port)
    sandbox.serve_until_signalled()
    return 0
