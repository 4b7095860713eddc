"""`anubis orders load FILE`: strict and all or nothing, on an orders table in SQLite and in
PostgreSQL (the same server as the app DB, as a platform view would be)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from anubis_dagster.cli import main
from anubis_dagster.intake.orders_source import OrdersSource
from anubis_dagster_tests.factories import make_order


@pytest.fixture
def orders_source(
    db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[OrdersSource]:
    """The orders source in the test's backend, in a table of its own (dropped afterwards)."""
    table = f"orders_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("ANUBIS_ORDERS_DATABASE_URL", db_url)
    monkeypatch.setenv("ANUBIS_ORDERS_TABLE", table)
    monkeypatch.setenv("ANUBIS_HOME", str(tmp_path / "home"))
    source = OrdersSource()
    yield source
    source.table.drop(source.engine, checkfirst=True)


def write(path: Path, *lines: object) -> Path:
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    )
    return path


def stored(source: OrdersSource) -> dict[int, dict]:
    if not source.exists():
        return {}
    t = source.table.c
    with source.engine.connect() as connection:
        return {i: p for i, p in connection.execute(select(t.id, t.payload).order_by(t.id))}


def test_a_good_file_loads_and_an_identical_repeated_line_loads_once(
    orders_source: OrdersSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    order = make_order(1)
    path = write(tmp_path / "orders.jsonl", order, make_order(2), order, "", order)
    assert main(["orders", "load", str(path)]) == 0
    assert "loaded 2 orders" in capsys.readouterr().out
    assert sorted(stored(orders_source)) == [1, 2]
    assert main(["orders", "load", str(path)]) == 0  # again: an update, still two rows
    t = orders_source.table
    with orders_source.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(t)).scalar() == 2


def test_any_bad_line_loads_nothing_and_each_error_names_line_and_field(
    orders_source: OrdersSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    as_true, as_float, too_big, no_stamp, text_id = (make_order(i) for i in (3, 4, 5, 6, 7))
    as_true["id"] = True
    as_float["id"] = 2.7
    too_big["id"] = 2**63
    del no_stamp["updated_at"]
    text_id["id"] = "7"
    long_origin = make_order(8, origin="x" * 41)
    nan = json.dumps(make_order(9)).replace('"price": 359.94', '"price": NaN')
    path = write(
        tmp_path / "orders.jsonl",
        make_order(1),
        as_true,
        as_float,
        too_big,
        no_stamp,
        text_id,
        long_origin,
        nan,
        "{not json",
        "[1, 2]",
        make_order(2),
    )
    assert main(["orders", "load", str(path)]) == 1
    err = capsys.readouterr().err
    for expected in (
        "orders.jsonl:2: id: must be an integer, not a boolean",
        "orders.jsonl:3: id: must be an integer, not a number with a fraction",
        "orders.jsonl:4: id: must be between 1 and 9223372036854775807",
        "orders.jsonl:5: updated_at: required",
        "orders.jsonl:6: id: must be an integer, not text",
        "orders.jsonl:7: origin: must be text of at most 40 plain characters",
        "orders.jsonl:8: not valid JSON (NaN is not valid JSON)",
        "orders.jsonl:9: not valid JSON (",
        "orders.jsonl:10: order: must be a JSON object, not a list",
        "9 errors: nothing loaded",
    ):
        assert expected in err, expected
    assert stored(orders_source) == {}  # nothing, not even the good lines 1 and 11


def test_two_different_lines_with_one_id_name_both_lines(
    orders_source: OrdersSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = make_order(1, email="other@example.com.br")
    path = write(tmp_path / "orders.jsonl", make_order(1), make_order(2), changed)
    assert main(["orders", "load", str(path)]) == 1
    assert (
        "orders.jsonl:3: id: order 1 is also on line 1, with different content"
        in capsys.readouterr().err
    )
    assert stored(orders_source) == {}
    # --skip-bad loads the good lines; neither version of the conflicting order is chosen
    assert main(["orders", "load", "--skip-bad", str(path)]) == 0
    out = capsys.readouterr()
    assert "loaded 1 orders" in out.out and "1 errors skipped" in out.out
    assert "orders.jsonl:3" in out.err
    assert sorted(stored(orders_source)) == [2]


def test_skip_bad_loads_the_good_lines_and_reports_the_bad(
    orders_source: OrdersSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = make_order(2)
    bad["id"] = True
    path = write(tmp_path / "orders.jsonl", make_order(1), bad, make_order(3), make_order(3))
    assert main(["orders", "load", "--skip-bad", str(path)]) == 0
    out = capsys.readouterr()
    assert "orders.jsonl:2: id: must be an integer, not a boolean" in out.err
    assert "loaded 2 orders" in out.out and "1 identical repeated lines loaded once" in out.out
    assert sorted(stored(orders_source)) == [1, 3]  # JSON true is never order 1


def test_a_missing_file_is_an_error(
    orders_source: OrdersSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["orders", "load", str(tmp_path / "nope.jsonl")]) == 1
    assert "no such file" in capsys.readouterr().err
