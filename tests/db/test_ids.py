"""Random identifiers: enough entropy, and usable as command-line arguments."""

from __future__ import annotations

import base64

from db import new_id


def test_identifiers_never_start_with_a_dash_so_the_cli_reads_them_as_arguments() -> None:
    # With plain token_urlsafe one identifier in 64 starts with "-"; among 5,000 that happens
    # with near certainty, and `cityid device revoke -abc…` then fails as an unknown option.
    assert not any(new_id().startswith("-") for _ in range(5000))


def test_identifiers_carry_at_least_128_random_bits() -> None:
    for nbytes in (16, 20):
        value = new_id(nbytes)
        assert len(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))) == nbytes
    assert len({new_id() for _ in range(1000)}) == 1000
