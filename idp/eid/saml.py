"""SAML 2.0 service provider for BundID-style eID identity providers (pysaml2 + xmlsec1).

``start`` builds a signed AuthnRequest asking for a minimum level; ``finish`` reads the
response as a top-down list of checks, each failing with its own ``idp.eid.errors`` type.
pysaml2 does the XML crypto (decryption, signature verification against the IdP's metadata
keys only); the protocol checks are here, so each names the clause it enforces.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as safe_et  # type: ignore[import-untyped]  # no stubs (pyproject not ours)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, ExtensionElement, class_name, md, saml, samlp
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.extension import algsupport
from saml2.metadata import entity_descriptor
from saml2.s_utils import UnknownSystemEntity, UnsupportedBinding
from saml2.sigver import DecryptError, MissingKey, SignatureError
from saml2.xmldsig import DIGEST_SHA256, DIGEST_SHA512, SIG_RSA_SHA256, SIG_RSA_SHA512

from idp.crypto import equal
from idp.eid.connector import EidAttribute, EidRequest, EidResponse, EidResult, EidStart, PendingEid
from idp.eid.errors import (
    AssertionNotEncrypted,
    AssertionNotSigned,
    AudienceMismatch,
    DecryptionFailed,
    DestinationMismatch,
    EidError,
    Expired,
    InResponseToMismatch,
    IssuerMismatch,
    LevelTooLow,
    LevelUnknown,
    MalformedResponse,
    MetadataUnusable,
    NotYetValid,
    PseudonymMissing,
    RecipientMismatch,
    Replayed,
    SignatureInvalid,
    StateMismatch,
    TrustLevelMissing,
    TrustLevelUnknown,
    UpstreamRefused,
    WeakEncryption,
)
from idp.eid.replay import ReplayStore
from policies import Level

AKDB_NS = "https://www.akdb.de/request/2018/09"
XMLENC_NS = "http://www.w3.org/2001/04/xmlenc#"
SAML_ASSERTION_NS = "urn:oasis:names:tc:SAML:2.0:assertion"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
SCM_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"

EIDAS_CONTEXTS: Mapping[Level, str] = MappingProxyType({level: level.acr for level in Level})
# BundID names its levels after STORK QAA (1 low, 3 substantial = ELSTER, 4 high = eID card).
BUNDID_CONTEXTS: Mapping[Level, str] = MappingProxyType(
    {
        Level.LOW: "STORK-QAA-Level-1",
        Level.SUBSTANTIAL: "STORK-QAA-Level-3",
        Level.HIGH: "STORK-QAA-Level-4",
    }
)
# Per-attribute trust level values (AKDB TrustLevel attribute; eIDAS URIs accepted as well).
DEFAULT_TRUST_LEVELS: Mapping[str, Level] = MappingProxyType(
    {
        "UNTERGEORDNET": Level.LOW,
        "NORMAL": Level.LOW,
        "SUBSTANTIELL": Level.SUBSTANTIAL,
        "HOCH": Level.HIGH,
        **{level.acr: level for level in Level},
    }
)
# Connector-neutral attribute names -> SAML attribute names (URI name format, X.500 and
# eGovernment OIDs). Check them against the IdP's interface description before production.
DEFAULT_ATTRIBUTES: Mapping[str, str] = MappingProxyType(
    {
        "given_name": "urn:oid:2.5.4.42",
        "family_name": "urn:oid:2.5.4.4",
        "birthdate": "urn:oid:1.2.40.0.10.2.1.1.55",
        "place_of_birth": "urn:oid:1.3.6.1.5.5.7.9.2",
        "street_address": "urn:oid:2.5.4.16",
        "postal_code": "urn:oid:2.5.4.17",
        "locality": "urn:oid:2.5.4.7",
        "country": "urn:oid:1.2.40.0.10.2.1.1.225599",
        "email": "urn:oid:0.9.2342.19200300.100.1.3",
    }
)
BPK2 = "urn:oid:1.3.6.1.4.1.25484.494450.3"  # BundID service-specific pseudonym (bPK2)
# Names cityid knows; those without a default SAML name are asked for under their own name
# until an admin maps them (saml_attribute_names).
KNOWN_ATTRIBUTES = (*DEFAULT_ATTRIBUTES, "nationality")

# How much an attribute is trusted (ARCHITECTURE.md: attributes kept with source and level):
# "attribute": each attribute carries its own level in the AKDB TrustLevel XML attribute
# (BundID); one without it refuses the answer. "assertion": every attribute gets the level
# the IdP authenticated at (its AuthnContextClassRef), as an eIDAS node or another IdP that
# knows no per-attribute levels vouches for all it sends at that level.
ATTRIBUTE_TRUST_MODELS = ("attribute", "assertion")
# SAML Bindings §3.5 (HTTP-POST) is preferred; §3.4 (HTTP-Redirect) where the IdP offers only it.
SSO_BINDINGS = (BINDING_HTTP_POST, BINDING_HTTP_REDIRECT)

log = logging.getLogger(__name__)

# XML Encryption 1.1 §5: key transport by RSA-OAEP only (RSA v1.5 falls to Bleichenbacher);
# block ciphers AES only (no 3DES). In order of preference (the SP metadata lists them so).
ENCRYPTION_PREFERENCE = (
    "http://www.w3.org/2009/xmlenc11#aes256-gcm",
    "http://www.w3.org/2009/xmlenc11#aes128-gcm",
    "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
    "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
    "http://www.w3.org/2009/xmlenc11#rsa-oaep",
    "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
)
DEFAULT_ENCRYPTION_ALGORITHMS = frozenset(ENCRYPTION_PREFERENCE)


@dataclass(frozen=True)
class SamlSettings:
    sp_entity_id: str
    acs_url: str
    sp_key_file: str
    sp_cert_file: str
    idp_entity_id: str
    idp_metadata_file: str
    authn_contexts: Mapping[Level, str] = field(default_factory=lambda: EIDAS_CONTEXTS)
    attribute_names: Mapping[str, str] = field(default_factory=lambda: DEFAULT_ATTRIBUTES)
    pseudonym_attribute: str = BPK2
    trust_level_attribute: str = f"{{{AKDB_NS}}}TrustLevel"
    trust_levels: Mapping[str, Level] = field(default_factory=lambda: DEFAULT_TRUST_LEVELS)
    attribute_trust: str = "attribute"  # one of ATTRIBUTE_TRUST_MODELS
    encryption_algorithms: frozenset[str] = DEFAULT_ENCRYPTION_ALGORITHMS
    clock_skew: timedelta = timedelta(seconds=60)
    xmlsec_binary: str = ""  # empty: found on PATH


class SamlConnector:
    name = "saml"

    def __init__(
        self,
        settings: SamlSettings,
        replay_store: ReplayStore,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if settings.attribute_trust not in ATTRIBUTE_TRUST_MODELS:
            raise ValueError(f"attribute_trust {settings.attribute_trust!r}")
        self._s = settings
        self._replay = replay_store
        self._clock = clock
        self._sp_key = Path(settings.sp_key_file).read_text(encoding="ascii")
        self._metadata_lock = threading.Lock()
        self._metadata_version = _file_version(settings.idp_metadata_file)
        self._client = load_client(settings)  # raises MetadataUnusable: refused at start
        self._broken_version: tuple[int, int, int] | None = None
        self._levels_by_context = {ref: level for level, ref in settings.authn_contexts.items()}
        self._attributes_by_saml_name = {v: k for k, v in settings.attribute_names.items()}

    # ---------------------------------------------------------------- metadata

    def client(self) -> Saml2Client:
        """The SAML client with the IdP metadata file as it is now: a changed file (its mtime,
        size or inode) is read again before it is used, once, under a lock. A changed file that
        cannot be used fails closed (MetadataUnusable) until it is fixed: the admin may have
        replaced the metadata to drop a compromised IdP key, so the old one is not kept."""
        try:
            version = _file_version(self._s.idp_metadata_file)
        except OSError as exc:
            raise MetadataUnusable(f"IdP metadata file: {exc}") from exc
        if version == self._metadata_version:
            return self._client
        with self._metadata_lock:
            if version == self._metadata_version:  # another thread reloaded it meanwhile
                return self._client
            if version == self._broken_version:
                raise MetadataUnusable("the changed IdP metadata file cannot be used (see the log)")
            try:
                client = load_client(self._s)
            except MetadataUnusable:
                self._broken_version = version
                log.error("eID SAML: the changed IdP metadata file cannot be used; eID login is off")
                raise
            self._client, self._metadata_version = client, version
            log.info("eID SAML: IdP metadata reloaded from %s", self._s.idp_metadata_file)
            return client

    # ---------------------------------------------------------------- start

    def start(self, request: EidRequest) -> EidStart:
        client = self.client()
        binding, destination = _sso_endpoint(client, self._s.idp_entity_id)
        # SAML Core §3.3.2.2.1: Comparison="minimum": the IdP must authenticate at least this.
        requested_context = samlp.RequestedAuthnContext(
            authn_context_class_ref=[
                saml.AuthnContextClassRef(text=self._s.authn_contexts[request.minimum_level])
            ],
            comparison="minimum",
        )
        redirect = binding == BINDING_HTTP_REDIRECT
        request_id, authn_request = client.create_authn_request(
            destination,
            binding=binding,
            requested_authn_context=requested_context,
            extensions=self._requested_attributes(request.attributes),
            # SAML Profiles §4.1.4.1: the request is signed; over HTTP-POST by an enveloped
            # XML signature, over HTTP-Redirect by the query string's Signature (SAML Bindings
            # §3.4.4.1: the XML then carries none).
            sign=not redirect,
            sign_alg=SIG_RSA_SHA256,
            digest_alg=DIGEST_SHA256,
        )
        relay_state = secrets.token_urlsafe(32)
        pending = PendingEid(
            connector=self.name,
            request_id=request_id,
            relay_state=relay_state,
            minimum_level=request.minimum_level,
            created_at=self._clock(),
        )
        if redirect:
            # SAML Bindings §3.4.4.1: DEFLATE, base64, URL-encoded; SigAlg and Signature over
            # SAMLRequest, RelayState and SigAlg in that order.
            info = client.apply_binding(
                BINDING_HTTP_REDIRECT,
                str(authn_request),
                destination,
                relay_state,
                sign=True,
                sigalg=SIG_RSA_SHA256,
            )
            location = dict(info["headers"])["Location"]
            return EidStart(method="GET", url=location, form=(), pending=pending)
        xml = str(authn_request).encode("utf-8")
        return EidStart(
            method="POST",
            url=destination,
            form=(
                ("SAMLRequest", base64.b64encode(xml).decode("ascii")),  # SAML Bindings §3.5.4
                ("RelayState", relay_state),
            ),
            pending=pending,
        )

    def _requested_attributes(self, names: tuple[str, ...]) -> samlp.Extensions | None:
        """AKDB AuthenticationRequest extension listing the attributes asked for."""
        wanted = [self._s.attribute_names.get(n, n) for n in names]
        if self._s.pseudonym_attribute not in wanted:
            wanted.append(self._s.pseudonym_attribute)
        children = [
            ExtensionElement(
                "RequestedAttribute",
                namespace=AKDB_NS,
                attributes={"Name": name, "RequiredAttribute": "true"},
            )
            for name in wanted
        ]
        requested = ExtensionElement("RequestedAttributes", namespace=AKDB_NS, children=children)
        authn = ExtensionElement(
            "AuthenticationRequest",
            namespace=AKDB_NS,
            attributes={"Version": "2"},
            children=[requested],
        )
        return samlp.Extensions(extension_elements=[authn])

    # ---------------------------------------------------------------- finish

    def finish(self, response: EidResponse) -> EidResult:
        params, pending = response.params, response.pending
        now = self._clock()
        # SAML Bindings §3.5.3: RelayState comes back unchanged and ties it to this browser.
        if not equal(params.get("RelayState", ""), pending.relay_state):
            raise StateMismatch("RelayState does not match the pending request")
        xml = _decode_post(params.get("SAMLResponse", ""))
        resp = _parse(samlp.response_from_string, xml, "Response")

        # SAML Bindings §3.5.5.2: a signed or encrypted message must name its Destination.
        if resp.destination != self._s.acs_url:
            raise DestinationMismatch(f"Destination {resp.destination!r}")
        self._check_issuer(resp.issuer, optional=True)
        _check_status(resp)
        # SAML Core §3.2.2 / Profiles §4.1.4.2: answers our AuthnRequest, not another one.
        if not _same(resp.in_response_to, pending.request_id):
            raise InResponseToMismatch(f"InResponseTo {resp.in_response_to!r}")

        client = self.client()
        assertion, plain_xml = self._decrypt_assertion(client, resp, xml)
        # SAML Profiles §4.1.4.2: the assertion's Issuer is the IdP (checked before its key
        # is looked up for the signature).
        self._check_issuer(assertion.issuer, optional=False)
        self._check_signature(client, assertion, plain_xml)
        _check_conditions(assertion, self._s.sp_entity_id, now, self._s.clock_skew)
        expires = self._check_bearer(assertion, pending, now)
        # SAML Profiles §4.1.4.5: bearer assertions must not be replayed; remember the ID
        # while the assertion could still be accepted.
        if self._replay.seen(assertion.id, expires + self._s.clock_skew):
            raise Replayed(f"assertion {assertion.id} was already used")

        level, context, auth_time = self._authn_level(assertion, pending)
        pseudonym, attributes = self._attributes(assertion, level)
        return EidResult(
            pseudonym=pseudonym,
            level=level,
            acr=level.acr,
            issuer=self._s.idp_entity_id,
            auth_time=auth_time,
            attributes=attributes,
            authn_context=context,
        )

    def _check_issuer(self, issuer: saml.Issuer | None, *, optional: bool) -> None:
        if issuer is None and optional:
            return  # SAML Profiles §4.1.4.2: the Response's Issuer MAY be omitted
        text = issuer.text.strip() if issuer is not None and issuer.text else ""
        if text != self._s.idp_entity_id:
            raise IssuerMismatch(f"Issuer {text!r}")

    def _decrypt_assertion(
        self, client: Saml2Client, resp: samlp.Response, xml: str
    ) -> tuple[saml.Assertion, str]:
        # SAML Core §2.3.4 / eIDAS SAML Message Format §2.6: assertions must come encrypted
        # (and, with SAML Profiles §4.1.4.2, exactly one of them).
        if resp.assertion or len(resp.encrypted_assertion) != 1:
            raise AssertionNotEncrypted(
                f"{len(resp.assertion)} plain, {len(resp.encrypted_assertion)} encrypted"
            )
        self._check_encryption_algorithms(xml)
        _check_encrypted_structure(xml)
        try:
            plain = client.sec.decrypt_keys(xml, keys=[self._sp_key])
        except DecryptError as exc:
            raise DecryptionFailed(str(exc)) from exc
        decrypted = _parse(samlp.response_from_string, plain, "decrypted Response")
        found = []
        for encrypted in decrypted.encrypted_assertion:
            for element in encrypted.extension_elements:
                found.append(_parse(saml.assertion_from_string, element.to_string(), "Assertion"))
        if len(found) != 1:
            raise DecryptionFailed(f"{len(found)} assertions after decryption")
        return found[0], plain

    def _check_encryption_algorithms(self, xml: str) -> None:
        root = safe_et.fromstring(xml)
        for method in root.iter(f"{{{XMLENC_NS}}}EncryptionMethod"):
            algorithm = method.get("Algorithm", "")
            # XML Encryption 1.1 §5.4, §5.5: refuse 3DES and RSA v1.5 key transport.
            if algorithm not in self._s.encryption_algorithms:
                raise WeakEncryption(f"encryption algorithm {algorithm} is not allowed")

    def _check_signature(self, client: Saml2Client, assertion: saml.Assertion, plain_xml: str) -> None:
        # SAML Profiles §4.1.3.5 / §4.1.4.2 and eIDAS: the assertion itself must be signed.
        if assertion.signature is None:
            raise AssertionNotSigned(f"assertion {assertion.id} carries no signature")
        # SAML Core §5.4: an enveloped signature whose single Reference points at this
        # assertion, verified with the IdP's metadata keys only (only_use_keys_in_metadata).
        try:
            ok = client.sec.check_signature(assertion, class_name(assertion), origdoc=plain_xml)
        except (SignatureError, MissingKey) as exc:
            raise SignatureInvalid(str(exc)) from exc
        if not ok:
            raise SignatureInvalid(f"assertion {assertion.id}")

    def _check_bearer(self, assertion: saml.Assertion, pending: PendingEid, now: datetime) -> datetime:
        """SAML Profiles §4.1.4.2 / §4.1.4.3: at least one bearer SubjectConfirmation with our
        Recipient, our request's InResponseTo and a NotOnOrAfter still ahead. Returns it."""
        subject = assertion.subject
        if subject is None:
            raise MalformedResponse("assertion without Subject")
        failures: list[EidError] = []
        for confirmation in subject.subject_confirmation:
            if confirmation.method != SCM_BEARER:
                continue
            data = confirmation.subject_confirmation_data
            if data is None:
                failures.append(MalformedResponse("bearer SubjectConfirmation without data"))
            elif data.recipient != self._s.acs_url:
                failures.append(RecipientMismatch(f"Recipient {data.recipient!r}"))
            elif not _same(data.in_response_to, pending.request_id):
                failures.append(InResponseToMismatch(f"bearer InResponseTo {data.in_response_to!r}"))
            elif data.not_before is not None:
                # SAML Profiles §4.1.4.2: bearer confirmation data MUST NOT carry NotBefore.
                failures.append(MalformedResponse("bearer SubjectConfirmationData NotBefore"))
            elif data.not_on_or_after is None:
                failures.append(MalformedResponse("bearer confirmation without NotOnOrAfter"))
            elif now - self._s.clock_skew >= _time(data.not_on_or_after):
                failures.append(Expired(f"SubjectConfirmationData NotOnOrAfter {data.not_on_or_after}"))
            else:
                return _time(data.not_on_or_after)
        if failures:
            raise failures[0]
        raise MalformedResponse("no bearer SubjectConfirmation")

    def _authn_level(self, assertion: saml.Assertion, pending: PendingEid) -> tuple[Level, str, datetime]:
        # SAML Profiles §4.1.4.2: at least one AuthnStatement.
        if not assertion.authn_statement:
            raise MalformedResponse("assertion without AuthnStatement")
        statement = assertion.authn_statement[0]
        context = statement.authn_context
        ref = context.authn_context_class_ref if context is not None else None
        text = ref.text.strip() if ref is not None and ref.text else ""
        level = self._levels_by_context.get(text)
        if level is None:
            raise LevelUnknown(f"AuthnContextClassRef {text!r}")
        # SAML Core §3.3.2.2.1: Comparison="minimum" must be honoured by the IdP; check anyway.
        if level < pending.minimum_level:
            raise LevelTooLow(f"{level.label} < {pending.minimum_level.label}")
        return level, text, _time(statement.authn_instant)

    def _attributes(
        self, assertion: saml.Assertion, assertion_level: Level
    ) -> tuple[str, tuple[EidAttribute, ...]]:
        pseudonym = ""
        attributes: list[EidAttribute] = []
        for statement in assertion.attribute_statement:
            for attribute in statement.attribute:
                values = [v.text.strip() for v in attribute.attribute_value if v.text]
                if attribute.name == self._s.pseudonym_attribute:
                    pseudonym = values[0] if values else ""
                    continue
                level = self._attribute_level(attribute, assertion_level)
                name = self._attributes_by_saml_name.get(attribute.name, attribute.name)
                attributes.extend(EidAttribute(name, value, self._s.idp_entity_id, level) for value in values)
        if not pseudonym:
            raise PseudonymMissing(f"no {self._s.pseudonym_attribute} attribute")
        return pseudonym, tuple(attributes)

    def _attribute_level(self, attribute: saml.Attribute, assertion_level: Level) -> Level:
        """BundID ("attribute"): each attribute says how well it was verified; without that we
        cannot store it with a level (ARCHITECTURE.md: attributes kept with their source and
        level). eIDAS node ("assertion"): the IdP vouches for every attribute at the level it
        authenticated; a TrustLevel it adds all the same can only lower that."""
        raw = (attribute.extension_attributes or {}).get(self._s.trust_level_attribute)
        if self._s.attribute_trust == "assertion":
            if raw is None:
                return assertion_level
            return min(assertion_level, self._trust_level(attribute, raw))
        if raw is None:
            raise TrustLevelMissing(f"attribute {attribute.name} has no trust level")
        return self._trust_level(attribute, raw)

    def _trust_level(self, attribute: saml.Attribute, raw: str) -> Level:
        level = self._s.trust_levels.get(raw.strip())
        if level is None:
            raise TrustLevelUnknown(f"attribute {attribute.name} trust level {raw!r}")
        return level


def attribute_names(overrides: Mapping[str, str]) -> dict[str, str]:
    """cityid's attribute names -> the IdP's SAML attribute Names: the defaults, as configured."""
    return {**DEFAULT_ATTRIBUTES, **overrides}


def settings_from_config(cfg: Any) -> SamlSettings:
    """SamlSettings from ``idp.config.Config`` (``eid_connector = "saml"``, the ``[eid]`` table)."""
    e = cfg.eid
    return SamlSettings(
        sp_entity_id=e.saml_sp_entity_id or f"{cfg.issuer}/login/eid/saml",
        acs_url=f"{cfg.issuer}/login/eid/callback",
        sp_key_file=e.saml_sp_key_file,
        sp_cert_file=e.saml_sp_cert_file,
        idp_entity_id=e.saml_idp_entity_id,
        idp_metadata_file=e.saml_idp_metadata_file,
        authn_contexts=BUNDID_CONTEXTS if e.saml_context_names == "bundid" else EIDAS_CONTEXTS,
        attribute_names=MappingProxyType(attribute_names(e.saml_attribute_names)),
        pseudonym_attribute=e.saml_pseudonym_attribute,
        attribute_trust=e.saml_attribute_trust,
        xmlsec_binary=e.saml_xmlsec_binary,
    )


def key_pair_problem(key_file: str, cert_file: str) -> str | None:
    """Why the SP's key and certificate cannot be used together, or None: the IdP checks our
    AuthnRequest signatures and encrypts to the certificate in our metadata (SAML Metadata
    §2.4.1.1), so a certificate of another key would fail every login."""
    try:
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        return f"not an unencrypted PEM private key and a PEM certificate ({exc})"
    if not isinstance(key, rsa.RSAPrivateKey):
        return "the key must be RSA (xmldsig rsa-sha256 signatures, RSA-OAEP key transport)"
    if cert.public_key() != key.public_key():
        return "the certificate is not the key's"
    return None


def load_client(s: SamlSettings) -> Saml2Client:
    """A SAML client for ``s``, or MetadataUnusable saying what is wrong with the IdP metadata:
    unreadable, without the configured IdP, without a signing key, or without a single sign-on
    service this SP can use (SAML Metadata §2.4.3)."""
    try:
        client = Saml2Client(_sp_config(s))
    except MetadataUnusable:
        raise
    except Exception as exc:  # pysaml2 raises many kinds for a bad file
        raise MetadataUnusable(f"{s.idp_metadata_file} cannot be read as SAML metadata: {exc}") from exc
    try:
        client.metadata[s.idp_entity_id]
    except KeyError:
        raise MetadataUnusable(
            f"{s.idp_metadata_file} does not describe the IdP {s.idp_entity_id!r}"
        ) from None
    _sso_endpoint(client, s.idp_entity_id)
    # SAML Metadata §2.4.1.1: the IdP's signing keys are the only ones trusted for assertions.
    try:
        signing = client.metadata.certs(s.idp_entity_id, "idpsso", use="signing")
    except (KeyError, AttributeError) as exc:
        raise MetadataUnusable(f"{s.idp_entity_id} has no IDPSSODescriptor") from exc
    if not signing:
        raise MetadataUnusable(f"{s.idp_entity_id} publishes no signing certificate in its metadata")
    return client


def sp_metadata(s: SamlSettings) -> str:
    """SAML Metadata §2.4.4 SPSSODescriptor, written by pysaml2's metadata tools. The algorithms
    it advertises are the ones this SP accepts, not all xmlsec1 knows (pysaml2 lists MD5 and
    SHA-1 too): SAML V2.0 Metadata Profile for Algorithm Support §2.3 and SAML Metadata §2.4.1.1
    (EncryptionMethod in the encryption KeyDescriptor)."""
    descriptor = entity_descriptor(_sp_config(s, with_idp=False))
    extensions = md.Extensions()
    for digest in (DIGEST_SHA256, DIGEST_SHA512):
        extensions.add_extension_element(algsupport.DigestMethod(algorithm=digest))
    for signing in (SIG_RSA_SHA256, SIG_RSA_SHA512):
        extensions.add_extension_element(algsupport.SigningMethod(algorithm=signing))
    descriptor.extensions = extensions
    found = descriptor.spsso_descriptor
    for sp in found if isinstance(found, list) else [found]:
        for key in sp.key_descriptor:
            if key.use == "encryption":
                key.encryption_method = [
                    md.EncryptionMethod(algorithm=a)
                    for a in ENCRYPTION_PREFERENCE
                    if a in s.encryption_algorithms
                ]
    return str(descriptor)


def _sso_endpoint(client: Saml2Client, idp_entity_id: str) -> tuple[str, str]:
    """(binding, location) of the IdP's SingleSignOnService: HTTP-POST, else HTTP-Redirect
    (SAML Profiles §4.1.2: the AuthnRequest may go by either)."""
    try:
        by_binding = client.metadata.service(idp_entity_id, "idpsso_descriptor", "single_sign_on_service")
    except (UnsupportedBinding, UnknownSystemEntity):  # no SingleSignOnService at all
        by_binding = {}
    for binding in SSO_BINDINGS:
        for service in (by_binding or {}).get(binding, []):
            location = str(service.get("location", ""))
            if location.startswith(("https://", "http://")):
                return binding, location
    raise MetadataUnusable(
        f"the IdP {idp_entity_id!r} offers no SingleSignOnService with the HTTP-POST or HTTP-Redirect "
        "binding in its metadata"
    )


def _file_version(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _sp_config(s: SamlSettings, *, with_idp: bool = True) -> SPConfig:
    xmlsec = s.xmlsec_binary or shutil.which("xmlsec1")
    if not xmlsec:
        raise RuntimeError("xmlsec1 not found: run scripts/system-deps.sh")
    config = SPConfig()
    config.load(
        {
            "entityid": s.sp_entity_id,
            "key_file": s.sp_key_file,
            "cert_file": s.sp_cert_file,
            "encryption_keypairs": [{"key_file": s.sp_key_file, "cert_file": s.sp_cert_file}],
            "xmlsec_binary": xmlsec,
            **({"metadata": {"local": [s.idp_metadata_file]}} if with_idp else {}),
            # Trust only keys from the IdP's metadata, never a certificate in the message.
            "only_use_keys_in_metadata": True,
            "service": {
                "sp": {
                    "endpoints": {"assertion_consumer_service": [(s.acs_url, BINDING_HTTP_POST)]},
                    "authn_requests_signed": True,
                    "want_assertions_signed": True,
                    "allow_unsolicited": False,
                }
            },
        }
    )
    return config


def _decode_post(value: str) -> str:
    # SAML Bindings §3.5.4: the message is base64-encoded in the SAMLResponse form field.
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise MalformedResponse("SAMLResponse is not base64 XML") from exc


def _parse(parser: Callable[[str], Any], xml: str, what: str) -> Any:
    try:
        parsed = parser(xml)
    except (ParseError, ValueError, TypeError, AttributeError) as exc:
        raise MalformedResponse(f"{what}: {exc}") from exc
    if parsed is None:
        raise MalformedResponse(f"not a {what}")
    return parsed


def _check_status(resp: samlp.Response) -> None:
    # SAML Core §3.2.2.2: only a top-level Success status carries an authentication.
    status = resp.status.status_code if resp.status is not None else None
    if status is None or status.value != STATUS_SUCCESS:
        codes = []
        while status is not None:
            codes.append(status.value)
            status = status.status_code
        raise UpstreamRefused(" / ".join(codes) or "no status")


def _check_conditions(assertion: saml.Assertion, sp_entity_id: str, now: datetime, skew: timedelta) -> None:
    conditions = assertion.conditions
    # SAML Profiles §4.1.4.2: the assertion MUST contain an AudienceRestriction.
    if conditions is None:
        raise AudienceMismatch("assertion without Conditions")
    # SAML Core §2.5.1.2 (NotBefore): not valid before.
    if conditions.not_before and now + skew < _time(conditions.not_before):
        raise NotYetValid(f"NotBefore {conditions.not_before}")
    # SAML Core §2.5.1.2 (NotOnOrAfter): not valid at or after.
    if conditions.not_on_or_after and now - skew >= _time(conditions.not_on_or_after):
        raise Expired(f"Conditions NotOnOrAfter {conditions.not_on_or_after}")
    # SAML Core §2.5.1.4: every AudienceRestriction must name us.
    restrictions = conditions.audience_restriction
    if not restrictions:
        raise AudienceMismatch("no AudienceRestriction")
    for restriction in restrictions:
        audiences = [a.text.strip() for a in restriction.audience if a.text]
        if sp_entity_id not in audiences:
            raise AudienceMismatch(f"audiences {audiences}")


def _check_encrypted_structure(xml: str) -> None:
    """The one ciphertext in the document is the EncryptedAssertion's, and that element holds
    nothing but it (and its key). xmlsec decrypts the first EncryptedData anywhere: a signed
    plaintext Assertion placed in an EncryptedAssertion next to some ciphertext elsewhere (in
    Extensions, say) would otherwise pass as "encrypted" (SAML Core §2.3.4, Profiles §4.1.4.2)."""
    root = safe_et.fromstring(xml)
    wrappers = [child for child in root if child.tag == f"{{{SAML_ASSERTION_NS}}}EncryptedAssertion"]
    if len(wrappers) != 1:
        raise AssertionNotEncrypted("the EncryptedAssertion is not a child of the Response")
    allowed = {f"{{{XMLENC_NS}}}EncryptedData", f"{{{XMLENC_NS}}}EncryptedKey"}
    inside = list(wrappers[0])
    if not inside or any(child.tag not in allowed for child in inside):
        raise AssertionNotEncrypted("the EncryptedAssertion holds more than its ciphertext")
    ciphertexts = list(root.iter(f"{{{XMLENC_NS}}}EncryptedData"))
    if len(ciphertexts) != 1 or ciphertexts[0] not in inside:
        raise AssertionNotEncrypted(f"{len(ciphertexts)} EncryptedData elements in the Response")


def _same(value: str | None, expected: str) -> bool:
    return value is not None and equal(value, expected)


def _time(value: str) -> datetime:
    """SAML Core §1.3.3: xs:dateTime in UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise MalformedResponse(f"bad time {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # SAML Core §1.3.3: no zone means UTC
    return moment.astimezone(UTC)
