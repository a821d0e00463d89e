"""The SAML connector against IdPs that are not BundID: the attribute trust model, attribute and
pseudonym names, HTTP-Redirect-only IdPs, unusable metadata, a changed metadata file, and the
SP metadata cityid publishes."""

from __future__ import annotations

import base64
import threading
import zlib
from dataclasses import replace
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import saml2.data.schemas
import xmlschema
from defusedxml import ElementTree as safe_et
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.response import IncorrectlySigned

from idp.eid import errors
from idp.eid.connector import EidRequest, EidResponse
from idp.eid.replay import InMemoryReplayStore
from idp.eid.saml import DEFAULT_ATTRIBUTES, SamlConnector, load_client, sp_metadata
from policies import Level
from tests.eid.saml_idp import IDP_ENTITY, SSO_URL, Issue, TestIdp, make_key_pair

PSEUDONYM = "urn:oid:1.3.6.1.4.1.25484.494450.3"
EIDAS_GIVEN = "http://eidas.europa.eu/attributes/naturalperson/CurrentGivenName"
EIDAS_FAMILY = "http://eidas.europa.eu/attributes/naturalperson/CurrentFamilyName"
EIDAS_ID = "http://eidas.europa.eu/attributes/naturalperson/PersonIdentifier"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"


def _finish(idp: TestIdp, connector: SamlConnector, issue: Issue, level: Level = Level.HIGH) -> Any:
    start = connector.start(EidRequest(level, ("given_name", "family_name")))
    request = idp.receive(dict(start.form)["SAMLRequest"])
    answer = idp.respond(request, issue)
    return connector.finish(
        EidResponse({"SAMLResponse": answer, "RelayState": start.pending.relay_state}, start.pending)
    )


WITHOUT_TRUST_LEVEL = (
    (PSEUDONYM, "bpk2-Erika-4711", None),
    ("urn:oid:2.5.4.42", "Erika", None),
    ("urn:oid:2.5.4.4", "Mustermann", None),
    ("urn:oid:1.2.40.0.10.2.1.1.55", "1964-08-12", None),
)


# ----------------------------------------------------------------------------- trust model


def test_an_eidas_node_style_idp_vouches_for_attributes_at_the_assertion_level(saml_idp: TestIdp) -> None:
    """attribute_trust = "assertion": attributes without the AKDB TrustLevel are kept at the level
    the IdP authenticated (AuthnContextClassRef), not refused as a whole."""
    connector = SamlConnector(replace(saml_idp.settings, attribute_trust="assertion"), InMemoryReplayStore())
    result = _finish(saml_idp, connector, Issue(attributes=WITHOUT_TRUST_LEVEL))
    assert result.pseudonym == "bpk2-Erika-4711"
    got = {a.name: (a.value, a.level) for a in result.attributes}
    assert got == {
        "given_name": ("Erika", Level.HIGH),
        "family_name": ("Mustermann", Level.HIGH),
        "birthdate": ("1964-08-12", Level.HIGH),
    }

    at_substantial = Issue(attributes=WITHOUT_TRUST_LEVEL, class_ref="http://eidas.europa.eu/LoA/substantial")
    result = _finish(saml_idp, connector, at_substantial, level=Level.SUBSTANTIAL)
    assert {a.level for a in result.attributes} == {Level.SUBSTANTIAL}


def test_the_bundid_trust_model_still_refuses_an_attribute_without_trust_level(saml_idp: TestIdp) -> None:
    connector = SamlConnector(saml_idp.settings, InMemoryReplayStore())  # attribute_trust = "attribute"
    with pytest.raises(errors.TrustLevelMissing):
        _finish(saml_idp, connector, Issue(attributes=WITHOUT_TRUST_LEVEL))


def test_with_assertion_trust_a_trust_level_can_only_lower_an_attribute(saml_idp: TestIdp) -> None:
    connector = SamlConnector(replace(saml_idp.settings, attribute_trust="assertion"), InMemoryReplayStore())
    issue = Issue(attributes=((PSEUDONYM, "p-1", None), ("urn:oid:2.5.4.42", "Erika", "NORMAL")))
    given = _finish(saml_idp, connector, issue).attribute("given_name")
    assert given is not None and given.level is Level.LOW
    with pytest.raises(errors.TrustLevelUnknown):  # an unknown value is still refused
        _finish(
            saml_idp, connector, Issue(attributes=((PSEUDONYM, "p", None), ("urn:oid:2.5.4.42", "E", "X")))
        )


def test_an_unknown_trust_model_is_refused() -> None:
    with pytest.raises(ValueError, match="attribute_trust"):
        SamlConnector(replace(_settings_stub(), attribute_trust="everything"), InMemoryReplayStore())


def _settings_stub() -> Any:
    from idp.eid.saml import SamlSettings

    return SamlSettings("sp", "acs", "/nonexistent", "/nonexistent", "idp", "/nonexistent")


# ----------------------------------------------------------------------------- attribute names


def test_pseudonym_and_attribute_names_are_settable_per_idp(saml_idp: TestIdp) -> None:
    names = MappingProxyType({**DEFAULT_ATTRIBUTES, "given_name": EIDAS_GIVEN, "family_name": EIDAS_FAMILY})
    settings = replace(
        saml_idp.settings, attribute_names=names, pseudonym_attribute=EIDAS_ID, attribute_trust="assertion"
    )
    connector = SamlConnector(settings, InMemoryReplayStore())
    start = connector.start(EidRequest(Level.HIGH, ("given_name", "family_name")))
    request = saml_idp.receive(dict(start.form)["SAMLRequest"])
    wanted = str(request.extensions)
    assert EIDAS_GIVEN in wanted and EIDAS_FAMILY in wanted and EIDAS_ID in wanted
    assert "urn:oid:2.5.4.42" not in wanted and PSEUDONYM not in wanted
    issue = Issue(
        attributes=(
            (EIDAS_ID, "DE/DE/0123456789", None),
            (EIDAS_GIVEN, "Erika", None),
            (EIDAS_FAMILY, "M", None),
        )
    )
    answer = saml_idp.respond(request, issue)
    result = connector.finish(
        EidResponse({"SAMLResponse": answer, "RelayState": start.pending.relay_state}, start.pending)
    )
    assert result.pseudonym == "DE/DE/0123456789"
    assert {a.name: a.value for a in result.attributes} == {"given_name": "Erika", "family_name": "M"}
    # The BundID pseudonym name no longer counts as the pseudonym: that answer has none.
    with pytest.raises(errors.PseudonymMissing):
        _finish(saml_idp, connector, Issue(attributes=((PSEUDONYM, "bpk2-x", None),)))


# ----------------------------------------------------------------------------- bindings, metadata


def test_an_idp_offering_only_http_redirect_gets_a_signed_redirect_saml_bindings_3_4_4_1(
    tmp_path: Path,
) -> None:
    idp = TestIdp(tmp_path, sso_bindings=(BINDING_HTTP_REDIRECT,))
    connector = SamlConnector(idp.settings, InMemoryReplayStore())
    start = connector.start(EidRequest(Level.HIGH, ("given_name",)))
    assert start.method == "GET" and start.url.startswith(f"{SSO_URL}?") and start.form == ()
    q = dict(parse_qsl(urlsplit(start.url).query))
    assert q["RelayState"] == start.pending.relay_state
    assert q["SigAlg"] == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" and q["Signature"]
    xml = zlib.decompress(base64.b64decode(q["SAMLRequest"]), -15).decode()
    assert "<ds:Signature" not in xml and "Signature>" not in xml  # §3.4.4.1: none in the XML
    request = idp.receive_redirect(start.url)  # the IdP verifies the query-string signature
    assert request.id == start.pending.request_id
    # A forged query (another RelayState under the same signature) is refused by the IdP.
    with pytest.raises(IncorrectlySigned):
        idp.receive_redirect(start.url.replace(q["RelayState"], "forged"))
    answer = idp.respond(request)
    result = connector.finish(
        EidResponse({"SAMLResponse": answer, "RelayState": start.pending.relay_state}, start.pending)
    )
    assert result.level is Level.HIGH


def test_http_post_is_preferred_when_the_idp_offers_both_bindings(tmp_path: Path) -> None:
    idp = TestIdp(tmp_path, sso_bindings=(BINDING_HTTP_REDIRECT, BINDING_HTTP_POST))
    start = SamlConnector(idp.settings, InMemoryReplayStore()).start(EidRequest(Level.HIGH))
    assert start.method == "POST" and start.url == SSO_URL


def test_metadata_without_a_usable_single_sign_on_service_is_refused_at_start(tmp_path: Path) -> None:
    artifact = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact"
    idp = TestIdp(tmp_path, sso_bindings=(artifact,))
    with pytest.raises(errors.MetadataUnusable, match="SingleSignOnService"):
        load_client(idp.settings)
    with pytest.raises(errors.MetadataUnusable, match="SingleSignOnService"):
        SamlConnector(idp.settings, InMemoryReplayStore())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("<not xml", "cannot be read", id="not-xml"),
        pytest.param("", "cannot be read", id="empty"),
        pytest.param("other-entity", "does not describe the IdP", id="another-idp"),
    ],
)
def test_unusable_metadata_is_refused_with_a_reason(tmp_path: Path, content: str, message: str) -> None:
    idp = TestIdp(tmp_path)
    path = Path(idp.settings.idp_metadata_file)
    if content == "other-entity":
        content = path.read_text().replace(IDP_ENTITY, "https://other-idp.example/idp")
    path.write_text(content)
    with pytest.raises(errors.MetadataUnusable, match=message):
        load_client(idp.settings)


# ----------------------------------------------------------------------------- reloading


def _made(directory: Path) -> Path:
    directory.mkdir()
    return directory


def _new_idp_key(idp: TestIdp, tmp_path: Path) -> str:
    """The IdP rolls its signing key: new key pair, new metadata file. Returns the old metadata."""
    old = Path(idp.settings.idp_metadata_file).read_text()
    key, cert = make_key_pair(tmp_path, "idp-next")
    Path(idp.idp_key).write_text(Path(key).read_text())
    Path(idp.idp_cert).write_text(Path(cert).read_text())
    from saml2.metadata import entity_descriptor

    Path(idp.settings.idp_metadata_file).write_text(str(entity_descriptor(idp._idp_config())))
    idp.serve_sp(idp.sp_entity, idp.acs_url)  # the IdP now signs with the new key
    return old


def test_a_changed_idp_metadata_file_is_used_without_a_restart(tmp_path: Path) -> None:
    idp = TestIdp(_made(tmp_path / "idp"))
    connector = SamlConnector(idp.settings, InMemoryReplayStore())
    assert _finish(idp, connector, Issue()).level is Level.HIGH
    _new_idp_key(idp, tmp_path)
    # The answer signed with the new key verifies: the file was read again.
    assert _finish(idp, connector, Issue()).level is Level.HIGH


def test_a_key_dropped_from_the_metadata_file_is_no_longer_trusted(tmp_path: Path) -> None:
    idp = TestIdp(_made(tmp_path / "idp"))
    connector = SamlConnector(idp.settings, InMemoryReplayStore())
    start = connector.start(EidRequest(Level.HIGH))
    request = idp.receive(dict(start.form)["SAMLRequest"])
    signed_with_old_key = idp.respond(request)
    _new_idp_key(idp, tmp_path)
    with pytest.raises(errors.SignatureInvalid):
        connector.finish(
            EidResponse(
                {"SAMLResponse": signed_with_old_key, "RelayState": start.pending.relay_state}, start.pending
            )
        )


def test_a_broken_metadata_file_fails_closed_until_it_is_fixed(tmp_path: Path) -> None:
    idp = TestIdp(tmp_path)
    connector = SamlConnector(idp.settings, InMemoryReplayStore())
    path = Path(idp.settings.idp_metadata_file)
    good = path.read_text()
    path.write_text(good[: len(good) // 2])  # half written
    for _ in range(2):  # refused each time, read only once
        with pytest.raises(errors.MetadataUnusable):
            connector.start(EidRequest(Level.HIGH))
    path.write_text(good + "\n")  # fixed (another size, another mtime)
    assert connector.start(EidRequest(Level.HIGH)).method == "POST"


def test_concurrent_requests_after_a_change_read_the_file_once(tmp_path: Path, monkeypatch: Any) -> None:
    import idp.eid.saml as saml_module

    idp = TestIdp(_made(tmp_path / "idp"))
    connector = SamlConnector(idp.settings, InMemoryReplayStore())
    _new_idp_key(idp, tmp_path)
    loads: list[int] = []
    real = saml_module.load_client

    def counting(settings: Any) -> Any:
        loads.append(1)
        return real(settings)

    monkeypatch.setattr(saml_module, "load_client", counting)
    barrier = threading.Barrier(6)
    clients: list[Any] = []

    def use() -> None:
        barrier.wait()
        clients.append(connector.client())

    threads = [threading.Thread(target=use) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len({id(c) for c in clients}) == 1


# ----------------------------------------------------------------------------- SP metadata


def _metadata_schema() -> xmlschema.XMLSchema:
    """SAML 2.0 metadata schema (with xmldsig, xenc) as pysaml2 ships it."""
    base = files(saml2.data.schemas)
    locations = {
        "http://www.w3.org/XML/1998/namespace": str(base / "xml.xsd"),
        DS: str(base / "xmldsig-core-schema.xsd"),
        "http://www.w3.org/2001/04/xmlenc#": str(base / "xenc-schema.xsd"),
        "urn:oasis:names:tc:SAML:2.0:assertion": str(base / "saml-schema-assertion-2.0.xsd"),
        MD: str(base / "saml-schema-metadata-2.0.xsd"),
    }
    return xmlschema.XMLSchema(str(base / "saml-schema-metadata-2.0.xsd"), locations=locations)


def check_sp_metadata(xml: str, *, entity_id: str, acs_url: str, cert_file: str) -> None:
    """Schema-valid SAML metadata naming the SP, its ACS (HTTP-POST) and its certificate for both
    signing and encryption (SAML Metadata §2.4.1.1, §2.4.4), advertising only strong algorithms."""
    _metadata_schema().validate(xml)  # raises on a schema violation
    root = safe_et.fromstring(xml)
    assert root.tag == f"{{{MD}}}EntityDescriptor" and root.get("entityID") == entity_id
    sp = root.find(f"{{{MD}}}SPSSODescriptor")
    assert sp is not None
    assert sp.get("AuthnRequestsSigned") == "true" and sp.get("WantAssertionsSigned") == "true"
    pem = Path(cert_file).read_text()
    der_b64 = "".join(line for line in pem.splitlines() if "-----" not in line)
    uses = {}
    for key in sp.findall(f"{{{MD}}}KeyDescriptor"):
        cert = key.find(f".//{{{DS}}}X509Certificate")
        assert cert is not None
        uses[key.get("use")] = "".join((cert.text or "").split())
    assert uses == {"signing": der_b64, "encryption": der_b64}
    acs = sp.findall(f"{{{MD}}}AssertionConsumerService")
    assert [(a.get("Binding"), a.get("Location")) for a in acs] == [
        ("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST", acs_url)
    ]
    advertised = [e.get("Algorithm", "") for e in root.iter() if e.get("Algorithm")]
    assert advertised and not any(
        weak in a for a in advertised for weak in ("md5", "sha1", "ripemd", "rsa-1_5", "tripledes", "dsa")
    ), advertised


def test_sp_metadata_names_the_acs_binding_and_both_certificates_saml_metadata_2_4_4(
    saml_idp: TestIdp,
) -> None:
    check_sp_metadata(
        sp_metadata(saml_idp.settings),
        entity_id=saml_idp.settings.sp_entity_id,
        acs_url=saml_idp.settings.acs_url,
        cert_file=saml_idp.settings.sp_cert_file,
    )


def test_sp_metadata_schema_check_catches_a_broken_document(saml_idp: TestIdp) -> None:
    """The schema check above can fail: an SPSSODescriptor without its required ACS."""
    xml = sp_metadata(saml_idp.settings)
    start = xml.index("<ns0:AssertionConsumerService")
    broken = xml[:start] + xml[xml.index("/>", start) + 2 :]
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        _metadata_schema().validate(broken)
