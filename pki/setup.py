"""Setting up the CA: root and issuing CA (``cityid ca init``), and the OCSP signer."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db import audit, utcnow
from pki import crl
from pki.ca import ISSUING, OCSP_SIGNER, ROOT, TSA, CertificateAuthority, load_ca
from pki.certpolicy import POLICY_CA, issuing_ca_policies, policy_oid
from pki.errors import BadRequest, CaNotInitialised, KeyStoreError, OcspSignerBusy, PkiError
from pki.issuance import BACKDATE
from pki.keystore import KeyStore, Signer
from pki.models import CaAuthority, CaCrlState
from pki.serials import new_serial, serial_hex
from pki.service_key import active_service_key, certify_service_key, signer_subject, store_authority
from pki.settings import CaSettings
from pki.urls import CaUrls

OCSP_SIGNER_RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class CaInitResult:
    created: bool
    root_serial: str
    root_fingerprint_sha256: str
    root_key_ref: str
    issuing_serial: str
    ocsp_signer_serial: str
    tsa_serial: str = ""
    recertified_issuing_serial: str | None = None  # upgrade: the issuing CA re-certified (same key)
    recertify_problem: str | None = None  # upgrade: it needed re-certifying but could not be


@dataclass(frozen=True)
class OcspSigner:
    serial: str
    key_ref: str
    certificate: x509.Certificate
    not_after: dt.datetime


def _name(text: str, what: str) -> x509.Name:
    try:
        name = x509.Name.from_rfc4514_string(text)
    except ValueError as exc:
        raise BadRequest(f"{what} is not an RFC 4514 name: {text!r}") from exc
    if not name.get_attributes_for_oid(NameOID.COMMON_NAME):
        raise BadRequest(f"{what} needs a CN")
    return name


def _ext(value: x509.ExtensionType, critical: bool) -> x509.Extension[x509.ExtensionType]:
    return x509.Extension(value.oid, critical, value)


def _ca_key_usage() -> x509.KeyUsage:
    # RFC 5280 §4.2.1.3: keyCertSign and cRLSign for a CA; critical
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _make_root(session: Session, settings: CaSettings, key_store: KeyStore, now: dt.datetime) -> CaAuthority:
    subject = _name(settings.root_subject, "ca.root_subject")
    key_ref = key_store.generate(f"root-{secrets.token_hex(8)}")
    key = key_store.signer(key_ref)
    not_before = now.replace(microsecond=0) - BACKDATE
    cert = x509.CertificateBuilder(
        issuer_name=subject,
        subject_name=subject,
        public_key=key.public_key(),
        serial_number=new_serial(),
        not_valid_before=not_before,
        not_valid_after=not_before + dt.timedelta(days=settings.root_validity_days),
        extensions=[
            # RFC 5280 §4.2.1.9: cA TRUE, critical in CA certificates
            _ext(x509.BasicConstraints(ca=True, path_length=None), True),
            _ext(_ca_key_usage(), True),
            # RFC 5280 §4.2.1.2: MUST appear in CA certificates
            _ext(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
        ],
    ).sign(key, hashes.SHA256())
    return store_authority(session, kind=ROOT, parent_id=None, key_ref=key_ref, cert=cert, now=now)


def _make_issuing(
    session: Session,
    settings: CaSettings,
    key_store: KeyStore,
    root: CaAuthority,
    urls: CaUrls,
    now: dt.datetime,
) -> CaAuthority:
    subject = _name(settings.issuing_subject, "ca.issuing_subject")
    root_cert = x509.load_der_x509_certificate(root.der)
    root_key = key_store.signer(root.key_ref)
    key_ref = key_store.generate(f"issuing-{secrets.token_hex(8)}")
    public = key_store.signer(key_ref).public_key()
    not_before = now.replace(microsecond=0) - BACKDATE
    not_after = min(
        not_before + dt.timedelta(days=settings.issuing_validity_days),
        root_cert.not_valid_after_utc,
    )
    cert = _issuing_certificate(settings, root_cert, root_key, subject, public, urls, not_before, not_after)
    row = store_authority(session, kind=ISSUING, parent_id=root.id, key_ref=key_ref, cert=cert, now=now)
    _sign_root_crl(session, root, root_key, now)
    return row


def _issuing_certificate(
    settings: CaSettings,
    root_cert: x509.Certificate,
    root_key: Signer,
    subject: x509.Name,
    public: ec.EllipticCurvePublicKey,
    urls: CaUrls,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    root_ski = root_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    # RFC 5280 §6.1.3 (d): a leaf's policy enters the valid policy tree only if the CA
    # certificate above it asserts it (or anyPolicy); we assert each one (docs/pki.md: CP)
    policies = [x509.PolicyInformation(oid, None) for oid in issuing_ca_policies(settings.policy_arc)]
    return x509.CertificateBuilder(
        issuer_name=root_cert.subject,
        subject_name=subject,
        public_key=public,
        serial_number=new_serial(),
        not_valid_before=not_before,
        not_valid_after=not_after,
        extensions=[
            # RFC 5280 §4.2.1.9: it certifies end entities only
            _ext(x509.BasicConstraints(ca=True, path_length=0), True),
            _ext(_ca_key_usage(), True),
            _ext(x509.SubjectKeyIdentifier.from_public_key(public), False),
            _ext(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), False),
            _ext(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.CA_ISSUERS,
                            x509.UniformResourceIdentifier(urls.root_cert),
                        )
                    ]
                ),
                False,
            ),
            _ext(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            [x509.UniformResourceIdentifier(urls.root_crl)], None, None, None
                        )
                    ]
                ),
                False,
            ),
            _ext(x509.CertificatePolicies(policies), False),
        ],
    ).sign(root_key, hashes.SHA256())


def _asserted_policies(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        return set()
    return {p.policy_identifier for p in ext}


def recertify_issuing_if_needed(
    session: Session,
    settings: CaSettings,
    key_store: KeyStore,
    base_url: str,
    *,
    actor: str = "system",
    now: dt.datetime | None = None,
) -> str | None:
    """Upgrade step (``cityid init`` on an existing instance): when the active issuing CA's
    certificate does not assert every policy its profiles issue under (instances set up before
    the explicit-policy fix asserted only ``<arc>.1``), the root certifies the *same* key again,
    with the same subject, key identifiers and end of validity, and the full policy list.
    Certificates issued before chain to either certificate. Returns the new serial, or None when
    nothing was due. Needs the root key; without it, a ``KeyStoreError`` (the caller says so)."""
    now = now or utcnow()
    row = session.execute(
        select(CaAuthority).where(CaAuthority.kind == ISSUING, CaAuthority.active.is_(True))
    ).scalar()
    if row is None or row.parent_id is None:
        return None
    cert = x509.load_der_x509_certificate(row.der)
    wanted = set(issuing_ca_policies(settings.policy_arc))
    if wanted <= _asserted_policies(cert):
        return None
    root = session.get(CaAuthority, row.parent_id)
    assert root is not None
    root_cert = x509.load_der_x509_certificate(root.der)
    root_key = key_store.signer(root.key_ref)
    public = key_store.signer(row.key_ref).public_key()
    if public.public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise KeyStoreError(f"{row.key_ref!r} is not the issuing CA's key")
    new = _issuing_certificate(
        settings,
        root_cert,
        root_key,
        cert.subject,
        public,
        CaUrls(base_url),
        now.replace(microsecond=0) - BACKDATE,
        cert.not_valid_after_utc,
    )
    old_serial = row.serial
    row.serial = serial_hex(new.serial_number)
    row.not_before = new.not_valid_before_utc
    row.der = new.public_bytes(serialization.Encoding.DER)
    audit.record(
        session,
        action="pki.ca.recertify",
        outcome="success",
        actor=actor,
        subject=new.subject.rfc4514_string(),
        reason="issuing CA certificate re-issued (same key) to assert every profile's policy",
        details={
            "old_serial": old_serial,
            "new_serial": row.serial,
            "policies": sorted(o.dotted_string for o in wanted),
        },
    )
    session.commit()
    return row.serial


def _sign_root_crl(session: Session, root: CaAuthority, root_key: Signer, now: dt.datetime) -> None:
    """The root's CRL (an ARL: it lists revoked CA certificates; none so far)."""
    state = session.get(CaCrlState, (root.id, crl.ROOT))
    number = (state.crl_number if state else 0) + 1
    der = crl.build_crl(
        issuer=x509.load_der_x509_certificate(root.der),
        signer=root_key,
        number=number,
        this_update=now,
        next_update=now + crl.ROOT_CRL_VALIDITY,
        entries=[],
        distribution_point=None,
    )
    if state is None:
        state = CaCrlState(issuer_id=root.id, scope=crl.ROOT, crl_number=number, stale=False)
        session.add(state)
    state.crl_number = number
    state.this_update = now.replace(microsecond=0)
    state.next_update = (now + crl.ROOT_CRL_VALIDITY).replace(microsecond=0)
    state.stale = False
    state.der = der


def init_ca(
    session: Session,
    settings: CaSettings,
    key_store: KeyStore,
    base_url: str,
    *,
    actor: str = "system",
    now: dt.datetime | None = None,
) -> CaInitResult:
    """Create the root and issuing CA, the OCSP signer and first CRLs; idempotent. Commits."""
    now = now or utcnow()
    urls = CaUrls(base_url)
    # bad settings refuse before any key is made (a key without its row would be left behind)
    policy_oid(settings.policy_arc, POLICY_CA)
    _name(settings.root_subject, "ca.root_subject")
    _name(settings.issuing_subject, "ca.issuing_subject")
    created = False
    try:
        ca = load_ca(session, settings, key_store, base_url)
    except CaNotInitialised:
        root = session.execute(
            select(CaAuthority).where(CaAuthority.kind == ROOT, CaAuthority.active.is_(True))
        ).scalar()
        if root is None:
            root = _make_root(session, settings, key_store, now)
        _make_issuing(session, settings, key_store, root, urls, now)
        session.commit()
        ca = load_ca(session, settings, key_store, base_url)
        created = True
    recertified: str | None = None
    recertify_problem: str | None = None
    if not created:  # upgrade of an existing instance (docs/operations.md: run init after upgrades)
        try:
            recertified = recertify_issuing_if_needed(
                session, settings, key_store, base_url, actor=actor, now=now
            )
        except KeyStoreError as exc:  # the root key moved offline: say so, change nothing
            session.rollback()
            recertify_problem = str(exc)
            audit.record(
                session,
                action="pki.ca.recertify",
                outcome="failure",
                actor=actor,
                subject=ca.certificate.subject.rfc4514_string(),
                reason=f"the issuing CA certificate needs re-issuing; the root key is not reachable: {exc}",
            )
            session.commit()
        if recertified is not None:
            ca = load_ca(session, settings, key_store, base_url)
    signer = current_ocsp_signer(session, ca, now=now, actor=actor)
    from pki.tsa import ensure_tsa

    tsa = ensure_tsa(session, ca, actor=actor, now=now)
    for scope in crl.scopes(ca):
        crl.current(session, ca, scope, now=now)
    root_row = session.get(CaAuthority, ca.root_id)
    assert root_row is not None
    result = CaInitResult(
        created=created,
        root_serial=root_row.serial,
        root_fingerprint_sha256=hashlib.sha256(root_row.der).hexdigest(),
        root_key_ref=root_row.key_ref,
        issuing_serial=serial_hex(ca.certificate.serial_number),
        ocsp_signer_serial=signer.serial,
        tsa_serial=tsa.serial,
        recertified_issuing_serial=recertified,
        recertify_problem=recertify_problem,
    )
    audit.record(
        session,
        action="pki.ca.init",
        outcome="success" if created else "info",
        actor=actor,
        subject=ca.certificate.subject.rfc4514_string(),
        reason="created" if created else "already initialised",
        details={
            "root_serial": result.root_serial,
            "issuing_serial": result.issuing_serial,
            "root_fingerprint_sha256": result.root_fingerprint_sha256,
        },
    )
    session.commit()
    return result


def rotate_ocsp_signer(
    session: Session, ca: CertificateAuthority, *, actor: str = "system", now: dt.datetime | None = None
) -> OcspSigner:
    """A new key and delegated OCSP signing certificate (RFC 6960 §4.2.2.2). Commits."""
    now = now or utcnow()
    key = certify_service_key(session, ca, OCSP_SIGNER, signer_subject(ca, "OCSP"), actor=actor, now=now)
    _release_claim(session, ca)
    session.commit()
    issued = key.issued
    return OcspSigner(issued.serial, key.key_ref, issued.certificate, issued.not_after)


def check_key_store(session: Session, settings: CaSettings, store: KeyStore, base_url: str) -> str | None:
    """What this machine cannot read of the CA keys in use (the issuing CA's, the OCSP signer's,
    the TSA's),
    or None; None too before ``cityid ca init``. Every machine that serves must reach the same key
    store: the OCSP signer is renewed by whichever machine answers first when it is due."""
    if session.execute(select(CaAuthority.id).limit(1)).first() is None:
        return None
    try:
        load_ca(session, settings, store, base_url).signer()
        refs = session.execute(
            select(CaAuthority.key_ref).where(
                CaAuthority.kind.in_((OCSP_SIGNER, TSA)), CaAuthority.active.is_(True)
            )
        ).scalars()
        for ref in refs:
            store.signer(ref)
    except PkiError as exc:
        return str(exc)
    return None


def current_ocsp_signer(
    session: Session, ca: CertificateAuthority, *, actor: str = "system", now: dt.datetime | None = None
) -> OcspSigner:
    """The active OCSP signer, rotated first if missing or about to expire."""
    now = now or utcnow()
    row = _active_signer(session, ca)
    if row is None or row.not_after - now < OCSP_SIGNER_RENEW_BEFORE:
        if _claim_rotation(session, ca, now):
            row = _active_signer(session, ca)  # read again: a rotation may have ended just before
            if row is not None and row.not_after - now >= OCSP_SIGNER_RENEW_BEFORE:
                _release_claim(session, ca)
                session.commit()
                return OcspSigner(
                    row.serial, row.key_ref, x509.load_der_x509_certificate(row.der), row.not_after
                )
            try:
                return rotate_ocsp_signer(session, ca, actor=actor, now=now)
            except BaseException:
                session.rollback()  # let another worker (or the next request) try at once
                _release_claim(session, ca)
                session.commit()
                raise
        if row is None or row.not_after <= now:
            raise OcspSignerBusy()  # RFC 6960 §2.3: the responder answers tryLater/internalError
        # another worker is rotating; the current signer is good for days yet
    return OcspSigner(row.serial, row.key_ref, x509.load_der_x509_certificate(row.der), row.not_after)


def _active_signer(session: Session, ca: CertificateAuthority) -> CaAuthority | None:
    return active_service_key(session, ca, OCSP_SIGNER)


# A rotation claimed this long ago and not finished (its worker died) may be claimed again.
ROTATION_CLAIM_TTL = dt.timedelta(minutes=5)


def _release_claim(session: Session, ca: CertificateAuthority) -> None:
    session.execute(update(CaAuthority).where(CaAuthority.id == ca.id).values(rotation_claimed_at=None))


def _claim_rotation(session: Session, ca: CertificateAuthority, now: dt.datetime) -> bool:
    """Whether this worker rotates the OCSP signer: one conditional update on the issuing CA's
    row, committed at once, decides (several workers found it due at the same time, and each
    made a signer key and certificate before)."""
    claimed = session.execute(
        update(CaAuthority)
        .where(
            CaAuthority.id == ca.id,
            (CaAuthority.rotation_claimed_at.is_(None))
            | (CaAuthority.rotation_claimed_at < now - ROTATION_CLAIM_TTL),
        )
        .values(rotation_claimed_at=now)
    )
    session.commit()
    return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]
