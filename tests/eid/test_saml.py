from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from idp.eid import errors
from idp.eid.connector import EidRequest, EidResponse
from idp.eid.replay import InMemoryReplayStore
from idp.eid.saml import SamlConnector
from policies import Level
from tests.eid.saml_idp import Issue


@pytest.fixture
def connector(saml_idp):
    return SamlConnector(saml_idp.settings, InMemoryReplayStore())


def run(saml_idp, connector, issue=None, *, level=Level.HIGH, attributes=("given_name",)):
    start = connector.start(EidRequest(level, attributes))
    form = dict(start.form)
    request = saml_idp.receive(form["SAMLRequest"])
    saml_response = saml_idp.respond(request, issue)
    return EidResponse({"SAMLResponse": saml_response, "RelayState": form["RelayState"]}, start.pending)


def test_signed_encrypted_assertion_is_accepted(saml_idp, connector):
    result = connector.finish(run(saml_idp, connector))
    assert result.pseudonym == "bpk2-Erika-4711"
    assert result.level is Level.HIGH and result.acr == "http://eidas.europa.eu/LoA/high"
    assert result.simulation is False
    given = result.attribute("given_name")
    assert given is not None and given.value == "Erika" and given.level is Level.HIGH
    assert given.source == "https://bundid.example/idp"
    assert result.auth_time.tzinfo is not None


def test_authn_request_is_signed_asks_minimum_level_and_attributes_saml_core_3_3_2_2_1(saml_idp, connector):
    start = connector.start(EidRequest(Level.SUBSTANTIAL, ("given_name", "family_name")))
    assert start.method == "POST" and start.url == "https://bundid.example/idp/sso"
    request = saml_idp.receive(dict(start.form)["SAMLRequest"])
    assert request.id == start.pending.request_id
    assert request.signature is not None
    context = request.requested_authn_context
    assert context.comparison == "minimum"
    assert [r.text for r in context.authn_context_class_ref] == ["http://eidas.europa.eu/LoA/substantial"]
    wanted = str(request.extensions)
    for oid in ("urn:oid:2.5.4.42", "urn:oid:2.5.4.4", "urn:oid:1.3.6.1.4.1.25484.494450.3"):
        assert oid in wanted


def test_response_is_aes_gcm_encrypted_by_the_real_idp(saml_idp, connector):
    import base64

    raw = base64.b64decode(run(saml_idp, connector).params["SAMLResponse"]).decode()
    assert "EncryptedAssertion" in raw and "xmlenc11#aes256-gcm" in raw
    assert "Erika" not in raw


def test_bundid_stork_levels_map_to_eidas(saml_idp):
    from dataclasses import replace

    from idp.eid.saml import BUNDID_CONTEXTS

    connector = SamlConnector(
        replace(saml_idp.settings, authn_contexts=BUNDID_CONTEXTS), InMemoryReplayStore()
    )
    start = connector.start(EidRequest(Level.HIGH))
    request = saml_idp.receive(dict(start.form)["SAMLRequest"])
    texts = [r.text for r in request.requested_authn_context.authn_context_class_ref]
    assert texts == ["STORK-QAA-Level-4"]
    response = saml_idp.respond(request, Issue(class_ref="STORK-QAA-Level-3"))
    pending = start.pending
    with pytest.raises(errors.LevelTooLow):
        connector.finish(EidResponse({"SAMLResponse": response, "RelayState": pending.relay_state}, pending))


def test_replayed_assertion_id_is_refused_saml_profiles_4_1_4_5(saml_idp, connector):
    response = run(saml_idp, connector)
    connector.finish(response)
    with pytest.raises(errors.Replayed):
        connector.finish(response)


def _later(minutes):
    return lambda: datetime.now(UTC) + timedelta(minutes=minutes)


REFUSALS = [
    pytest.param(
        Issue(tamper=lambda xml: xml.replace(">Erika<", ">Mallory<", 1)),
        errors.SignatureInvalid,
        id="fail/tampered-signed-assertion-saml-core-5.4",
    ),
    pytest.param(
        # issued to another service of the same IdP, then re-encrypted for us (the signature
        # covers the plaintext, so only the audience check stops it)
        Issue(audience="https://other-service.example/saml/metadata"),
        errors.AudienceMismatch,
        id="fail/wrong-audience-saml-core-2.5.1.4",
    ),
    pytest.param(
        Issue(
            attributes=(
                ("urn:oid:1.3.6.1.4.1.25484.494450.3", "bpk2-x", "HOCH"),
                ("urn:oid:2.5.4.42", "Erika", None),
            )
        ),
        errors.TrustLevelMissing,
        id="fail/missing-trust-level",
    ),
    pytest.param(
        Issue(
            attributes=(
                ("urn:oid:1.3.6.1.4.1.25484.494450.3", "b", "HOCH"),
                ("urn:oid:2.5.4.42", "E", "SEHR"),
            )
        ),
        errors.TrustLevelUnknown,
        id="fail/unknown-trust-level",
    ),
    pytest.param(
        Issue(attributes=(("urn:oid:2.5.4.42", "Erika", "HOCH"),)),
        errors.PseudonymMissing,
        id="fail/no-pseudonym",
    ),
    pytest.param(Issue(sign_assertion=False), errors.AssertionNotSigned, id="fail/unsigned-assertion"),
    pytest.param(
        Issue(encrypt_for="other-sp"), errors.DecryptionFailed, id="fail/encrypted-for-someone-else"
    ),
    pytest.param(Issue(encrypt=False), errors.AssertionNotEncrypted, id="fail/plain-assertion"),
    pytest.param(Issue(strong_encryption=False), errors.WeakEncryption, id="fail/3des-xmlenc11-5.4"),
    pytest.param(
        Issue(in_response_to="id-someone-elses-request"),
        errors.InResponseToMismatch,
        id="fail/other-request-saml-profiles-4.1.4.2",
    ),
    pytest.param(
        Issue(destination="https://evil.example/acs"),
        errors.DestinationMismatch,
        id="fail/wrong-destination-saml-bindings-3.5.5.2",
    ),
    pytest.param(
        Issue(class_ref="http://eidas.europa.eu/LoA/substantial"),
        errors.LevelTooLow,
        id="fail/level-below-minimum-saml-core-3.3.2.2.1",
    ),
    pytest.param(
        Issue(class_ref="urn:oasis:names:tc:SAML:2.0:ac:classes:Password"),
        errors.LevelUnknown,
        id="fail/unknown-authn-context",
    ),
]


@pytest.mark.parametrize(("issue", "error"), REFUSALS)
def test_refusals(saml_idp, connector, issue, error):
    with pytest.raises(error):
        connector.finish(run(saml_idp, connector, issue))


@pytest.mark.parametrize(
    ("clock", "error"),
    [
        pytest.param(_later(10), errors.Expired, id="fail/expired-saml-core-2.5.1.2-not-on-or-after"),
        pytest.param(_later(-10), errors.NotYetValid, id="fail/early-saml-core-2.5.1.2-not-before"),
    ],
)
def test_validity_window(saml_idp, connector, clock, error):
    response = run(saml_idp, connector)
    late = SamlConnector(saml_idp.settings, InMemoryReplayStore(), clock=clock)
    with pytest.raises(error):
        late.finish(response)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        pytest.param({"RelayState": "forged"}, errors.StateMismatch, id="fail/relay-state"),
        pytest.param({"SAMLResponse": "%%%"}, errors.MalformedResponse, id="fail/not-base64"),
        pytest.param({"SAMLResponse": "PGE+PC9hPg=="}, errors.MalformedResponse, id="fail/not-saml"),
    ],
)
def test_broken_posts(saml_idp, connector, change, error):
    response = run(saml_idp, connector)
    with pytest.raises(error):
        connector.finish(EidResponse({**response.params, **change}, response.pending))


def test_error_status_is_refused_saml_core_3_2_2_2(saml_idp, connector):
    start = connector.start(EidRequest(Level.HIGH))
    request = saml_idp.receive(dict(start.form)["SAMLRequest"])
    response = saml_idp.refuse(request, "urn:oasis:names:tc:SAML:2.0:status:AuthnFailed")
    with pytest.raises(errors.UpstreamRefused, match="AuthnFailed"):
        connector.finish(
            EidResponse({"SAMLResponse": response, "RelayState": start.pending.relay_state}, start.pending)
        )


def test_a_plain_assertion_wrapped_as_encrypted_is_refused_saml_core_2_3_4(saml_idp: Any) -> None:
    """A signed assertion in plaintext inside <EncryptedAssertion>, with a ciphertext for our
    (public) key from another response placed before it in <Extensions>: xmlsec decrypts that
    one, and the plaintext would pass as "encrypted"."""
    import base64
    import re

    conn = SamlConnector(saml_idp.settings, InMemoryReplayStore())
    s0 = conn.start(EidRequest(Level.HIGH, ("given_name",)))
    other = base64.b64decode(saml_idp.respond(saml_idp.receive(dict(s0.form)["SAMLRequest"]))).decode()
    enc_data = re.search(r"<(\w+:)?EncryptedData.*?</(\w+:)?EncryptedData>", other, re.S)
    assert enc_data
    start = conn.start(EidRequest(Level.HIGH, ("given_name",)))
    form = dict(start.form)
    plain = base64.b64decode(
        saml_idp.respond(saml_idp.receive(form["SAMLRequest"]), Issue(encrypt=False))
    ).decode()
    m = re.search(r"<(ns\d+:|saml:)?Assertion\b.*?</(ns\d+:|saml:)?Assertion>", plain, re.S)
    assert m
    wrapped = plain.replace(
        m.group(0),
        f'<saml:EncryptedAssertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">{m.group(0)}'
        "</saml:EncryptedAssertion>",
    )
    wrapped = re.sub(
        r"(<(\w+:)?Status\b)",
        '<samlp:Extensions xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol">'
        f"{enc_data.group(0)}</samlp:Extensions>\\1",
        wrapped,
        count=1,
    )
    params = {"SAMLResponse": base64.b64encode(wrapped.encode()).decode(), "RelayState": form["RelayState"]}
    with pytest.raises(errors.AssertionNotEncrypted):
        conn.finish(EidResponse(params, start.pending))
