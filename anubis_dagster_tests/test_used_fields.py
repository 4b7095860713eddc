"""Validate what is used, tolerate what is not (issue 21), without Dagster or a database.

- Each adapter's declared order fields are exactly what its payload mapping reads: the mapping
  runs on orders that record every key it touches (over each branch), and the reads are
  compared with the declaration both ways (a field read but not declared would be unchecked
  input; one declared but not read would refuse students for nothing).
- Property (hypothesis): random extra keys at any level, and random JSON in any field nobody
  reads, never change a valid order's routing or its validity for each integration.
- An order is validated per integration: valid for Estácio and invalid for Kroton at once.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anubis_dagster.config.integrations import load_integrations
from anubis_dagster.core.order_document import scan_document, storable_order
from anubis_dagster.core.routing import FILTER_KEY_PATHS, filter_fields, first_match
from anubis_dagster.core.validation import INTAKE_FIELDS, UsedFields, validate_order
from anubis_dagster.intake.routes import route_fields
from anubis_dagster.integrations.base import order_fields_for
from anubis_dagster.integrations.estacio import payload as estacio
from anubis_dagster.integrations.kroton import payload as kroton
from anubis_dagster_tests.factories import ESTACIO_OFFER, KROTON_OFFER, make_order

TODAY = date(2026, 11, 23)
LOCATION = {"cep": "01310100", "codMunicipio": "3550308", "codBairro": "1001", "uf": "SP"}
ORIGIN_SETTINGS = {"canal_vendas_id": 85, "id_afiliado": "DL00QUERO12991", "id_tipo_prova": 1}


class Traced(dict):  # type: ignore[type-arg]
    """An order (or a part of it) that records the path of every key read through it; a part
    read whole (iterated, copied) records `path.*`."""

    def __init__(self, data: dict[str, Any], path: str, reads: set[str]) -> None:
        super().__init__(data)
        self._path = path
        self._reads = reads

    def _child(self, key: str, value: Any) -> Any:
        path = f"{self._path}.{key}" if self._path else key
        self._reads.add(path)
        return Traced(value, path, self._reads) if isinstance(value, dict) else value

    def get(self, key: str, default: Any = None) -> Any:
        return self._child(key, super().get(key, default))

    def __getitem__(self, key: str) -> Any:
        return self._child(key, super().__getitem__(key))

    def _whole(self) -> None:
        self._reads.add(f"{self._path}.*" if self._path else "*")

    def keys(self) -> Any:
        self._whole()
        return super().keys()

    def items(self) -> Any:
        self._whole()
        return super().items()

    def values(self) -> Any:
        self._whole()
        return super().values()

    def __iter__(self) -> Iterator[str]:
        self._whole()
        return super().__iter__()


def fields_read(reads: set[str]) -> set[str]:
    """The leaves of the paths read: `offer.metadata` read to reach `offer.metadata.codCurso`
    is a step, not a field."""
    return {p for p in reads if not any(q.startswith(p + ".") for q in reads)}


def traced(order: dict[str, Any]) -> tuple[Traced, set[str]]:
    reads: set[str] = set()
    return Traced(copy.deepcopy(order), "", reads), reads


def kroton_variants() -> list[dict[str, Any]]:
    """Every branch of Kroton's mapping: the offer's metadata complete, and reduced to the
    unit (the rest derived from the course)."""
    full = make_order(1)
    derived = make_order(2)
    derived["offer"]["metadata"] = {"idUnidadeOrigem": 5001}
    return [full, derived]


def test_kroton_declares_exactly_what_its_payload_mapping_reads() -> None:
    reads: set[str] = set()
    for order in kroton_variants():
        view, seen = traced(order)
        kroton.catalog_query(view, TODAY)
        kroton.registration_body(
            view, offers=["A", "B"], gender="F", origin_settings=ORIGIN_SETTINGS
        )
        reads |= seen
    assert fields_read(reads) == kroton.PAYLOAD_FIELDS.read
    assert kroton.PAYLOAD_FIELDS.required <= kroton.PAYLOAD_FIELDS.read
    # the adapter: its mapping plus the gender column (`sexo`) intake fills from the order
    assert order_fields_for("kroton").read == kroton.PAYLOAD_FIELDS.read | {"base_user.gender"}


def test_estacio_declares_exactly_what_its_payload_mapping_reads() -> None:
    reads: set[str] = set()
    for checkout in ("paid", "pending"):
        order = make_order(1, offer=ESTACIO_OFFER)
        order["checkout_step"] = checkout
        view, seen = traced(order)
        # the calls the adapter makes with the subscription's order
        estacio.consent_body(view, collection_token="t", purpose_id="p", topic_id="q")
        estacio.cep_of(view)
        metadata = view["offer"]["metadata"]
        campus = estacio.next_campus(metadata, [])
        estacio.alternate_campus(metadata, [campus])
        estacio.registration_body(view, campus=campus, location=LOCATION)
        reads |= seen
    assert fields_read(reads) == estacio.PAYLOAD_FIELDS.read
    assert estacio.PAYLOAD_FIELDS.required <= estacio.PAYLOAD_FIELDS.read
    assert order_fields_for("estacio") == estacio.PAYLOAD_FIELDS


def test_the_trace_catches_a_field_read_but_not_declared() -> None:
    """The comparison above fails for a mapping that reads one field more."""

    def reads_the_uuid_too(order: dict[str, Any]) -> dict[str, Any]:
        body = kroton.catalog_query(order, TODAY)
        body["uuid"] = order["offer"]["uuid"]
        return body

    view, seen = traced(make_order(1))
    reads_the_uuid_too(view)
    assert "offer.uuid" in fields_read(seen) - kroton.PAYLOAD_FIELDS.read
    view, seen = traced(make_order(1))
    dict(view["offer"]["metadata"])  # a part read whole shows as such
    assert "offer.metadata.*" in fields_read(seen)


# --- the integrations' fields, from the integrations file ------------------------------------
def routes() -> list[tuple[str, list[tuple[int, dict[str, Any]]], UsedFields]]:
    out = []
    for integration in load_integrations().integrations:
        filters = [(i, f.filter) for i, f in enumerate(integration.filters, start=1)]
        out.append((integration.key, filters, order_fields_for(integration.type)))
    return out


ROUTES = routes()
#: every field anything reads, and every routing path: what the property must leave alone
ALL_USED = INTAKE_FIELDS.read | set(FILTER_KEY_PATHS.values())
for _key, _filters, _fields in ROUTES:
    ALL_USED |= _fields.read
    for _, _filter in _filters:
        ALL_USED |= filter_fields(_filter)[1]


def outcome(order: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """integration → its problems with the order, for each integration it is routed to."""
    found = {}
    for key, filters, adapter_fields in ROUTES:
        match = first_match(filters, order)
        if match is None:
            continue
        fields = route_fields(adapter_fields, match[1])
        problems = validate_order(order, today=TODAY, fields=fields)
        found[key] = [(p.field, p.message) for p in problems]
    return found


def test_an_order_is_valid_for_estacio_and_invalid_for_kroton_at_once() -> None:
    """Routed to both, it is judged by what each one reads: Estácio never reads the offer's
    `idUnidadeOrigem` or the RG, Kroton does."""
    order = make_order(1, offer=ESTACIO_OFFER, rg=["not", "text"])
    order["offer"]["university_id"] = 10  # Kroton's filter too
    order["offer"]["education_group_id"] = 2
    kroton_filter = next(f for k, fs, _ in ROUTES if k == "kroton" for _, f in fs)
    kroton_filter = {k: v for k, v in kroton_filter.items() if k != "education_group_ids"}
    both = [
        (k, fs if k == "estacio" else [(1, kroton_filter)], f)
        for k, fs, f in ROUTES
        if k in ("kroton", "estacio")
    ]
    found = {}
    for key, filters, adapter_fields in both:
        match = first_match(filters, order)
        assert match is not None, key
        problems = validate_order(order, today=TODAY, fields=route_fields(adapter_fields, match[1]))
        found[key] = {p.field: p.message for p in problems}
    assert found["estacio"] == {}
    assert found["kroton"] == {
        "base_user.rg": "must be text, not a list",
        "offer.metadata.idUnidadeOrigem": "required field is missing",
    }


def test_a_field_an_ies_receives_still_refuses_the_order() -> None:
    order = make_order(1)
    order["offer"]["metadata"]["idUnidadeOrigem"] = {"id": 5001}
    order["base_user"]["address"]["city"] = "São\x00Paulo"
    order["offer"]["uuid"] = 12345  # read by nobody
    assert dict(outcome(order)["kroton"]) == {
        "base_user.address.city": "holds control, invisible or invalid characters",
        "offer.metadata.idUnidadeOrigem": "must be text or a number, not an object",
    }


def test_the_issue_drift_is_valid_and_the_document_bounds_stay() -> None:
    order = make_order(1)
    order["offer"]["uuid"] = 123456789
    order["utm"] = {"source": "google", "campaign": 7}
    order["payment"] = {"method": "pix", "amount": 359.94, "id": 10**30}
    order["offer"]["campaign"] = ["black", "friday"]
    order["base_user"]["marketing_opt_in"] = True
    order["base_user"]["id"] = "u-10001"
    assert outcome(order) == {"kroton": []}
    # in the strict view (every rule) the same order is refused
    strict = {p.field for p in validate_order(order, today=TODAY)}
    assert {"offer.uuid", "base_user.id", "payment.id"} <= strict
    order["utm"]["notes"] = "x" * (300 * 1024)
    assert outcome(order) == {
        "kroton": [("order", "order document is larger than 262144 characters")]
    }


def test_unstorable_values_in_unused_fields_are_stored_without_them() -> None:
    order = make_order(1)
    order["utm"] = {"note": "a\x00b\ud800", "big": 10**30, "ok": [1, "x"]}
    assert outcome(order) == {"kroton": []}
    stored = storable_order(order)
    assert stored["utm"] == {"note": "a\ufffdb\ufffd", "big": None, "ok": [1, "x"]}
    assert scan_document(stored) == []
    assert stored["base_user"] == order["base_user"] and stored["offer"] == order["offer"]


# --- property ---------------------------------------------------------------------------------
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, the object holding it's parent) of every object in the order."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _paths(value, f"{path}.{key}" if path else key)


def _used_or_above(path: str) -> bool:
    return any(path == f or f.startswith(path + ".") for f in ALL_USED)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), offer=st.sampled_from([KROTON_OFFER, ESTACIO_OFFER]))
def test_unused_fields_and_extra_keys_never_change_a_valid_orders_outcome(
    data: st.DataObject, offer: dict[str, Any]
) -> None:
    order = make_order(1, offer=offer)
    expected = outcome(order)
    assert expected and all(problems == [] for problems in expected.values())
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        objects = list(_paths(order))
        path, node = data.draw(st.sampled_from(objects))
        if data.draw(st.booleans()):  # an extra key at this level
            key = data.draw(st.text(min_size=1, max_size=12))
            child = f"{path}.{key}" if path else key
            if key in node or _used_or_above(child):
                continue
            node[key] = data.draw(json_values)
        else:  # any JSON in a field nobody reads
            unused = [k for k in node if not _used_or_above(f"{path}.{k}" if path else k)]
            if not unused:
                continue
            node[data.draw(st.sampled_from(unused))] = data.draw(json_values)
    assert outcome(order) == expected


@pytest.mark.parametrize("offer", [KROTON_OFFER, ESTACIO_OFFER])
def test_the_strict_view_still_judges_every_field(offer: dict[str, Any]) -> None:
    """`validate_order` without `fields` keeps every rule (the poison-input bounds, as tests
    and tools call it); intake passes each integration's fields."""
    order = make_order(1, offer=offer)
    order["base_user"]["id"] = 2**63
    assert "base_user.id" in {p.field for p in validate_order(order, today=TODAY)}
    assert all(problems == [] for problems in outcome(order).values())
