"""``cityid credentials …``: the city's wallet credentials (docs/wallet.md). Thin over idp.vci.

Exit status: 0 done, 1 refused (no such card), 2 bad input, 3 no/unmigrated database, 4 unknown account.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from cli import _account_or_fail, data_dir_option, fail, instance_keys, json_option, out, session_for

KINDS = ("library-card",)


@click.group("credentials")
def credentials_group() -> None:
    """Credentials the city issues into citizens' wallets (OpenID4VCI)."""


@credentials_group.command("grant")
@data_dir_option
@click.argument("email_or_id")
@click.argument("kind", type=click.Choice(KINDS))
@click.option("--number", required=True, help="the library card number")
@click.option("--given-name", default="", help="default: from the linked ID card or wallet")
@click.option("--family-name", default="", help="default: from the linked ID card or wallet")
@click.option("--library", default="Stadtbibliothek", show_default=True)
@click.option("--valid-until", default="", help="YYYY-MM-DD (default: in two years)")
@json_option
def grant(
    data_dir: Path,
    email_or_id: str,
    kind: str,
    number: str,
    given_name: str,
    family_name: str,
    library: str,
    valid_until: str,
    as_json: bool,
) -> None:
    """Grant (or renew) a citizen's library card; she then adds it to her wallet on My account."""
    from db import audit
    from idp import eid_store
    from idp.vci import store

    if not number.strip() or len(number) > 40:
        fail("--number: 1 to 40 characters", as_json, 2)
    try:
        until = (
            dt.date.fromisoformat(valid_until) if valid_until else dt.date.today() + dt.timedelta(days=730)
        )
    except ValueError:
        fail(f"--valid-until {valid_until!r}: use YYYY-MM-DD", as_json, 2)
    with session_for(data_dir, as_json) as (cfg, s):
        keys = instance_keys(cfg)
        acct = _account_or_fail(s, keys, email_or_id, as_json)
        verified = {a.name: a.value for a in eid_store.verified_attributes(s, keys.personal_data, acct.id)}
        given = given_name or verified.get("given_name", "")
        family = family_name or verified.get("family_name", "")
        if not given or not family:
            fail("no verified name on this account: give --given-name and --family-name", as_json, 2)
        store.grant_card(
            s,
            keys.personal_data,
            account_id=acct.id,
            number=number.strip(),
            given_name=given,
            family_name=family,
            library=library,
            valid_until=until,
        )
        audit.record(s, action="vci.grant", outcome="success", actor="admin", subject=acct.id, reason=kind)
    out(
        {"granted": kind, "account": acct.id, "valid_until": until.isoformat()},
        as_json,
        f"{kind} granted to {acct.id}",
    )


@credentials_group.command("revoke")
@data_dir_option
@click.argument("email_or_id")
@click.argument("kind", type=click.Choice(KINDS))
@json_option
def revoke(data_dir: Path, email_or_id: str, kind: str, as_json: bool) -> None:
    """Revoke a citizen's library card: every credential issued for it reads INVALID in the
    status list at once."""
    from db import audit
    from idp.vci import store

    with session_for(data_dir, as_json) as (cfg, s):
        keys = instance_keys(cfg)
        acct = _account_or_fail(s, keys, email_or_id, as_json)
        if store.card_of(s, keys.personal_data, acct.id) is None:
            fail(f"account {acct.id} has no {kind}", as_json, 1)
        n = store.revoke_card(s, acct.id)
        audit.record(
            s,
            action="vci.revoke",
            outcome="success",
            actor="admin",
            subject=acct.id,
            reason=f"{kind}: {n} credential(s)",
        )
    out(
        {"revoked": kind, "account": acct.id, "credentials": n},
        as_json,
        f"{kind} of {acct.id} revoked ({n} credential(s))",
    )


COMMANDS = [credentials_group]
