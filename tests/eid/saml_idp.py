"""A real SAML identity provider for tests: pysaml2's ``saml2.server.Server``, in process,
with keys and certificates generated at test time and metadata exchanged through files."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig, SPConfig
from saml2.entity import Entity
from saml2.metadata import entity_descriptor
from saml2.saml import (
    NAME_FORMAT_URI,
    NAMEID_FORMAT_TRANSIENT,
    Attribute,
    AttributeStatement,
    AttributeValue,
    NameID,
)
from saml2.server import Server
from saml2.sigver import get_pem_wrapped_unwrapped, make_temp, pre_encryption_part
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from idp.eid.saml import AKDB_NS, BPK2, SamlSettings

SP_ENTITY = "https://cityid.example/eid/saml/metadata"
OTHER_SP_ENTITY = "https://other-service.example/saml/metadata"  # another SP the IdP serves
ACS_URL = "https://cityid.example/eid/saml/acs"
IDP_ENTITY = "https://bundid.example/idp"
SSO_URL = "https://bundid.example/idp/sso"
AES256_GCM = "http://www.w3.org/2009/xmlenc11#aes256-gcm"
TRUST = f"{{{AKDB_NS}}}TrustLevel"
XMLSEC = shutil.which("xmlsec1") or "/usr/bin/xmlsec1"


def make_key_pair(directory: Path, name: str) -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(key_path), str(cert_path)


@dataclass
class Issue:
    """How the test IdP should answer; defaults are a correct BundID-like answer."""

    attributes: tuple[tuple[str, str, str | None], ...] = (
        (BPK2, "bpk2-Erika-4711", "HOCH"),
        ("urn:oid:2.5.4.42", "Erika", "HOCH"),
        ("urn:oid:2.5.4.4", "Mustermann", "HOCH"),
    )
    class_ref: str = "http://eidas.europa.eu/LoA/high"
    audience: str = SP_ENTITY
    destination: str = ACS_URL
    in_response_to: str | None = None  # None: the request's ID
    sign_assertion: bool = True
    encrypt: bool = True
    strong_encryption: bool = True
    tamper: Callable[[str], str] | None = None  # applied after signing, before encrypting
    encrypt_for: str = "sp"  # whose certificate the assertion is encrypted to


class _Server(Server):
    issue: Issue

    def setup_assertion(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        assertion = super().setup_assertion(*args, **kwargs)
        attributes = []
        for name, value, trust in self.issue.attributes:
            attribute = Attribute(
                name=name, name_format=NAME_FORMAT_URI, attribute_value=[AttributeValue(text=value)]
            )
            if trust is not None:
                attribute.extension_attributes = {TRUST: trust}
            attributes.append(attribute)
        assertion.attribute_statement = [AttributeStatement(attribute=attributes)]
        return assertion

    def _encrypt_assertion(self, encrypt_cert, sp_entity_id, response, node_xpath=None):  # type: ignore[no-untyped-def]
        if self.issue.tamper is not None:
            response = self.issue.tamper(response)
        if not self.issue.strong_encryption:
            return Entity._encrypt_assertion(self, encrypt_cert, sp_entity_id, response, node_xpath)
        wrapped, unwrapped = get_pem_wrapped_unwrapped(encrypt_cert)
        tmp = make_temp(wrapped.encode("ascii"), decode=False)
        template = pre_encryption_part(msg_enc=AES256_GCM, encrypt_cert=unwrapped)
        return self.sec.encrypt_assertion(
            response, tmp.name, template, key_type="aes-256", node_xpath=node_xpath
        )


class TestIdp:
    __test__ = False

    def __init__(
        self,
        directory: Path,
        sp_entity: str = SP_ENTITY,
        acs_url: str = ACS_URL,
        sso_bindings: tuple[str, ...] = (BINDING_HTTP_POST,),
    ) -> None:
        """``sp_entity``/``acs_url``: the SP it serves (a live cityid's, for tests over HTTP).
        ``sso_bindings``: the SingleSignOnService bindings its metadata offers."""
        self.dir = directory
        self.sso_bindings = sso_bindings
        self.sp_key, self.sp_cert = make_key_pair(directory, "sp")
        self.idp_key, self.idp_cert = make_key_pair(directory, "idp")
        self.other_key, self.other_cert = make_key_pair(directory, "other-sp")
        (directory / "idp-metadata.xml").write_text(str(entity_descriptor(self._idp_config())))
        self.serve_sp(sp_entity, acs_url)

    def serve_sp(self, sp_entity: str, acs_url: str) -> None:
        """Serve the SP ``sp_entity`` with its ACS at ``acs_url`` (a live cityid's, whose port
        is known only once it runs; the IdP's metadata and keys stay as they are)."""
        directory = self.dir
        self.sp_entity, self.acs_url = sp_entity, acs_url
        (directory / "sp-metadata.xml").write_text(str(entity_descriptor(self._sp_config())))
        other = self._sp_config(OTHER_SP_ENTITY, self.other_key, self.other_cert)
        (directory / "other-sp-metadata.xml").write_text(str(entity_descriptor(other)))
        self.server = _Server(
            config=self._idp_config(
                str(directory / "sp-metadata.xml"), str(directory / "other-sp-metadata.xml")
            )
        )
        self.settings = SamlSettings(
            sp_entity_id=sp_entity,
            acs_url=acs_url,
            sp_key_file=self.sp_key,
            sp_cert_file=self.sp_cert,
            idp_entity_id=IDP_ENTITY,
            idp_metadata_file=str(directory / "idp-metadata.xml"),
            xmlsec_binary=XMLSEC,
        )

    def _sp_config(self, entity=None, key=None, cert=None) -> SPConfig:
        entity = entity or self.sp_entity
        key, cert = key or self.sp_key, cert or self.sp_cert
        config = SPConfig()
        config.load(
            {
                "entityid": entity,
                "key_file": key,
                "cert_file": cert,
                "encryption_keypairs": [{"key_file": key, "cert_file": cert}],
                "xmlsec_binary": XMLSEC,
                "service": {
                    "sp": {
                        "endpoints": {"assertion_consumer_service": [(self.acs_url, BINDING_HTTP_POST)]},
                        "authn_requests_signed": True,
                        "want_assertions_signed": True,
                    }
                },
            }
        )
        return config

    def _idp_config(self, *sp_metadata: str) -> IdPConfig:
        data = {
            "entityid": IDP_ENTITY,
            "key_file": self.idp_key,
            "cert_file": self.idp_cert,
            "xmlsec_binary": XMLSEC,
            "service": {
                "idp": {
                    "endpoints": {"single_sign_on_service": [(SSO_URL, b) for b in self.sso_bindings]},
                    "policy": {"default": {"lifetime": {"minutes": 5}}},
                    "want_authn_requests_signed": True,
                    "name_id_format": [NAMEID_FORMAT_TRANSIENT],
                }
            },
        }
        if sp_metadata:
            data["metadata"] = {"local": list(sp_metadata)}
        config = IdPConfig()
        config.load(data)
        return config

    def receive(self, saml_request: str):  # type: ignore[no-untyped-def]
        """Parse and verify (signature included) the SP's AuthnRequest, as the IdP does."""
        return self.server.parse_authn_request(saml_request, BINDING_HTTP_POST).message

    def receive_redirect(self, url: str):  # type: ignore[no-untyped-def]
        """The same for the HTTP-Redirect binding: the signature is over the query string
        (SAML Bindings §3.4.4.1), verified with the SP's key from its metadata."""
        q = dict(parse_qsl(urlsplit(url).query))
        return self.server.parse_authn_request(
            q["SAMLRequest"],
            BINDING_HTTP_REDIRECT,
            relay_state=q.get("RelayState"),
            sigalg=q.get("SigAlg"),
            signature=q.get("Signature"),
        ).message

    def respond(self, request, issue: Issue | None = None) -> str:  # type: ignore[no-untyped-def]
        issue = issue or Issue(audience=self.sp_entity, destination=self.acs_url)
        self.server.issue = issue
        response = self.server.create_authn_response(
            identity={},
            in_response_to=issue.in_response_to or request.id,
            destination=issue.destination,
            sp_entity_id=issue.audience,
            name_id=NameID(format=NAMEID_FORMAT_TRANSIENT, text="transient-1"),
            authn={"class_ref": issue.class_ref, "authn_instant": 0},
            sign_assertion=issue.sign_assertion,
            sign_response=False,
            encrypt_assertion=issue.encrypt,
            encrypt_cert_assertion=(
                (self.dir / f"{issue.encrypt_for}.crt").read_text() if issue.encrypt else None
            ),
            sign_alg=SIG_RSA_SHA256,
            digest_alg=DIGEST_SHA256,
        )
        return base64.b64encode(str(response).encode("utf-8")).decode("ascii")

    def refuse(self, request, status: str) -> str:  # type: ignore[no-untyped-def]
        """An error Response, as when the citizen cancels (SAML Core §3.2.2.2)."""
        response = self.server.create_error_response(
            request.id, self.acs_url, info=(status, "cancelled by the user")
        )
        return base64.b64encode(str(response).encode("utf-8")).decode("ascii")
