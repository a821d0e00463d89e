"""POST /pki/tsa with a live server: openssl asks for a token and verifies it (RFC 3161 §3.4)."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from sqlalchemy import select

from db import make_engine, make_session_factory
from db.audit import AuditEvent
from pki.tsa import _TimeStampResp
from tests.pki import test_http
from tests.pki.helpers import openssl, write
from tests.pki.test_http import Live

live = test_http.live  # the live-server fixture


def _post(live: Live, body: bytes, ctype: str = "application/timestamp-query") -> tuple[int, bytes, str]:
    request = urllib.request.Request(live.base + "/pki/tsa", data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read(), r.headers.get_content_type()
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get_content_type()


def test_openssl_ts_verify_accepts_a_token_from_the_live_tsa_rfc3161_3_4(live: Live, tmp_path: Path) -> None:
    data = write(tmp_path / "doc.txt", b"Bescheid")
    query = subprocess.run(
        ["openssl", "ts", "-query", "-data", data, "-sha256", "-cert"], capture_output=True, check=True
    ).stdout
    status, body, ctype = _post(live, query)
    assert status == 200 and ctype == "application/timestamp-reply"
    (tmp_path / "reply.tsr").write_bytes(body)
    chain, _ = live.get("/pki/chain.pem")
    issuing_pem, root_pem = chain.split(b"-----END CERTIFICATE-----\n", 1)
    done = openssl(
        "ts",
        "-verify",
        "-data",
        data,
        "-in",
        str(tmp_path / "reply.tsr"),
        "-CAfile",
        write(tmp_path / "root.pem", root_pem),
        "-untrusted",
        write(tmp_path / "issuing.pem", issuing_pem + b"-----END CERTIFICATE-----\n"),
    )
    assert "Verification: OK" in done.stdout, done.stdout + done.stderr


def _audit_denials(db_url: str) -> list[AuditEvent]:
    engine = make_engine(db_url, pool=False)
    try:
        with make_session_factory(engine)() as s:
            return list(
                s.scalars(
                    select(AuditEvent).where(AuditEvent.action == "pki.tsa.request").order_by(AuditEvent.seq)
                )
            )
    finally:
        engine.dispose()


def test_bad_queries_get_a_tsa_rejection_4xx_and_an_audit_entry_rfc3161_2_4_2(
    live: Live, db_url: str
) -> None:
    cases = [
        (b"not DER", "application/timestamp-query", 400, "bad_data_format"),
        (b"\x30\x00", "text/plain", 415, "bad_request"),
        (b"\x30" * 20000, "application/timestamp-query", 413, "bad_request"),
    ]
    for body, ctype, http_status, fail_info in cases:
        status, reply, reply_type = _post(live, body, ctype)
        assert status == http_status and reply_type == "application/timestamp-reply"
        info = _TimeStampResp.load(reply)["status"]
        assert info["status"].native == "rejection" and set(info["fail_info"].native) == {fail_info}
    denials = _audit_denials(db_url)
    assert [json.loads(d.details)["fail_info"] for d in denials] == [
        "bad_data_format",
        "bad_request",
        "bad_request",
    ]
    assert all(d.outcome == "denied" for d in denials)
