from datetime import timedelta

import pytest

from anubis_dagster.core.retry_schedule import DEFAULT_SCHEDULE, RetrySchedule, parse_schedule
from anubis_dagster.settings import get_settings


def test_default_schedule_grows_from_a_minute_to_a_day() -> None:
    schedule = RetrySchedule(parse_schedule(DEFAULT_SCHEDULE))
    assert [schedule.delay_after(n) for n in range(1, 8)] == [
        timedelta(minutes=1),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
        timedelta(hours=6),
        timedelta(hours=12),
        timedelta(hours=24),
    ]
    assert schedule.delay_after(8) is None  # dead letter
    assert schedule.max_attempts == 8
    assert schedule.total() == timedelta(hours=44, minutes=36)


def test_schedule_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANUBIS_RETRY_SCHEDULE", "10s, 1m")
    schedule = RetrySchedule.parse(get_settings().anubis_retry_schedule)
    assert schedule.delays == (timedelta(seconds=10), timedelta(minutes=1))
    assert RetrySchedule.parse("2h").delays == (timedelta(hours=2),)


def test_the_settings_default_is_the_default_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANUBIS_RETRY_SCHEDULE", raising=False)
    assert get_settings().anubis_retry_schedule == DEFAULT_SCHEDULE


@pytest.mark.parametrize("text", ["", "5", "1x", "1m,,2m", "-1m"])
def test_bad_schedules_are_refused_with_the_item(text: str) -> None:
    with pytest.raises(ValueError, match="retry schedule"):
        parse_schedule(text)


def test_attempts_start_at_one() -> None:
    with pytest.raises(ValueError):
        RetrySchedule(parse_schedule("1m")).delay_after(0)
