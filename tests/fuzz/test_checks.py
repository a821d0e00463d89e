"""The campaign's checks can fail: each catches what it is there to catch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Response
from sqlalchemy import text

from db import transaction
from tests.fuzz.conftest import ATTEMPT_TABLES, STATS, STATUSES, Target, table_digests


@pytest.fixture(autouse=True)
def _not_in_the_report() -> Iterator[None]:
    yield
    STATS.pop("harness", None)  # made-up answers: not requests the campaign sent
    STATUSES.pop("harness", None)


def _answer(target: Target, status: int, body: str, mimetype: str = "application/json") -> Response:
    with target.app.test_request_context("/"):
        resp = Response(body, status=status, mimetype=mimetype)
    return resp


def test_a_refused_request_that_changed_a_table_fails_the_state_check(target: Target) -> None:
    before = table_digests(target.engine)
    with transaction(target.app.extensions["cityid"].sessions) as s:
        s.execute(text("UPDATE idp_client SET name = name || '!' WHERE client_id = 'fuzz-public'"))
    refused = _answer(target, 400, '{"error": "invalid_request", "error_description": "x"}')
    with pytest.raises(AssertionError, match="idp_client"):
        target.check("harness", refused, before)
    # an accepted request may change state
    before = table_digests(target.engine)
    with transaction(target.app.extensions["cityid"].sessions) as s:
        s.execute(text("UPDATE idp_client SET name = rtrim(name, '!') WHERE client_id = 'fuzz-public'"))
    target.check("harness", _answer(target, 200, "{}"), before)


def test_the_state_check_covers_every_table_but_the_attempt_tables(target: Target) -> None:
    from db import Base

    tables = {t.name for t in Base.metadata.sorted_tables}
    assert ATTEMPT_TABLES <= tables  # each name left out is a real table
    assert set(table_digests(target.engine)) == tables - ATTEMPT_TABLES


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, '{"error": "server_error", "error_description": "x"}', "500"),
        (400, '{"error": "invalid_request"}', "no error_description"),
        (401, '{"error_description": "x"}', "no error"),
        (400, "[]", "no object"),
        (400, "not json", "not JSON"),
    ],
)
def test_server_errors_and_incomplete_json_errors_fail(
    target: Target, status: int, body: str, message: str
) -> None:
    with pytest.raises(AssertionError, match=message):
        target.check("harness", _answer(target, status, body), table_digests(target.engine))
