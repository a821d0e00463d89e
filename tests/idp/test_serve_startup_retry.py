"""`cityid serve`'s start-up checks outlast a database restart that begins after the database was
seen up (issue 19: a supervisor's restart during a failover must not end in exit code 2)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from idp.serve import while_database_away


def _refused() -> OperationalError:
    """A real driver error: a connection to a port where nobody listens."""
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none", poolclass=NullPool)
    try:
        engine.connect()
    except OperationalError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("port 1 accepted a connection")


def test_a_start_up_step_is_run_again_from_the_start_while_the_connection_is_lost() -> None:
    lost = _refused()
    calls: list[int] = []

    def step() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise lost
        return "checked"

    assert while_database_away(step, "checking", seconds=10) == "checked"
    assert len(calls) == 3


def test_a_start_up_step_gives_up_when_the_database_stays_away() -> None:
    lost = _refused()

    def step() -> None:
        raise lost

    with pytest.raises(OperationalError):
        while_database_away(step, "checking", seconds=0.5)


def test_any_other_start_up_error_is_raised_at_once() -> None:
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        raise ValueError("the schema is newer than this release")

    with pytest.raises(ValueError):
        while_database_away(step, "checking", seconds=10)
    assert calls == [1]
