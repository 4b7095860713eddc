import pytest

from anubis_dagster.core.states import (
    FINAL_STATUSES,
    IllegalTransition,
    Status,
    check_transition,
    holds_cpf,
    is_allowed,
)

S = Status


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.TO_SYNC, S.TO_REGISTER),
        (S.TO_SYNC, S.EMPTY_COURSE),
        (S.TO_SYNC, S.COURSE_FAILED),
        (S.COURSE_FAILED, S.TO_REGISTER),
        (S.TO_REGISTER, S.REGISTERED),
        (S.TO_REGISTER, S.AWAITING_REGISTER),
        (S.TO_REGISTER, S.REGISTER_FAILED),
        (S.AWAITING_REGISTER, S.REGISTERED),
        (S.AWAITING_REGISTER, S.FAILED),
        (S.REGISTERED, S.ENROLLED),
        (S.REGISTERED, S.DROPPED),
        (S.REGISTERED, S.FAILED),
        (S.TO_SYNC_LGPD, S.TO_REGISTER),
        (S.TO_SYNC_LGPD, S.SYNC_LGPD_FAILED),
        (S.SYNC_LGPD_FAILED, S.TO_REGISTER),
        (S.INVALID, S.TO_SYNC),
    ],
)
def test_reference_transitions_are_allowed(current: Status, target: Status) -> None:
    assert is_allowed(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.EMPTY_COURSE, S.TO_REGISTER),
        (S.ENROLLED, S.DROPPED),
        (S.TO_SYNC, S.REGISTERED),
        (S.REGISTER_FAILED, S.REGISTERED),
        (S.DUPLICATE, S.TO_SYNC),
        (None, S.REGISTERED),
    ],
)
def test_illegal_transitions_raise(current: Status | None, target: Status) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(current, target)


def test_final_statuses_and_requeue() -> None:
    assert {S.ENROLLED, S.DROPPED, S.FAILED, S.EMPTY_COURSE, S.REGISTER_FAILED} <= FINAL_STATUSES
    assert S.REGISTERED not in FINAL_STATUSES
    assert is_allowed(S.FAILED, S.TO_REGISTER, requeue=True)
    assert not is_allowed(S.ENROLLED, S.TO_REGISTER, requeue=True)


def test_only_live_subscriptions_hold_the_cpf() -> None:
    assert holds_cpf(S.TO_SYNC) and holds_cpf(S.REGISTERED) and holds_cpf(S.ENROLLED)
    assert not holds_cpf(S.INVALID) and not holds_cpf(S.DROPPED) and not holds_cpf(S.FAILED)
