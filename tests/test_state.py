"""The session state machine (SPEC §3): one transition function, state derived from timestamps."""

from __future__ import annotations

import pytest

from agenthuman_local.sessions.state import (
    TRANSITIONS,
    InvalidTransition,
    SessionState,
    derive_state,
    transition,
)

C, S, E = SessionState.CREATED, SessionState.STARTED, SessionState.ENDED


@pytest.mark.parametrize(("current", "target"), [(C, S), (C, E), (S, E)])
def test_legal_moves(current: SessionState, target: SessionState) -> None:
    assert transition(current, target) is target


@pytest.mark.parametrize(("current", "target"), [(S, C), (E, C), (E, S), (C, C), (S, S), (E, E)])
def test_illegal_moves_name_both_states(current: SessionState, target: SessionState) -> None:
    with pytest.raises(InvalidTransition) as caught:
        transition(current, target)
    assert current.value in str(caught.value) and target.value in str(caught.value)
    assert (caught.value.current, caught.value.target) == (current, target)
    assert caught.value.status == 409


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(SessionState)
    assert TRANSITIONS[E] == frozenset()


def test_derived_in_spec_order() -> None:
    assert derive_state(None, None) is C
    assert derive_state(1.0, None) is S
    assert derive_state(1.0, 2.0) is E
    assert derive_state(None, 2.0) is E  # ended_at wins, checked first
