"""The time-stamp authority (RFC 3161, with RFC 5816's ESSCertIDv2).

A ``TimeStamper`` is loaded once per process with the active TSA certificate (profile
``timestamping``, issued by the issuing CA) and a signer from the key store: the key never leaves
its store. ``respond(request_der)`` answers a DER ``TimeStampReq`` with a DER ``TimeStampResp``;
a request it cannot grant gets status ``rejection`` with the failInfo of RFC 3161 §2.4.2, never
an exception. ``stamp(digest)`` is the in-process path ``signing/`` uses.

ASN.1: requests are decoded and tokens encoded with cryptography's declarative ASN.1
(``pki/tsa_asn1.py``, ~0.2 ms a token); the constant parts and rejections are built by asn1crypto
(its ``tsp`` and ``cms`` modules). The signature by the key store's signer (ECDSA P-256, SHA-256).
Serial numbers are 128 random bits (RFC 3161 §2.4.2: unique for each token of this TSA, across
every worker, with no shared state).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from asn1crypto import cms, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat import asn1
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.orm import Session

from db import utcnow
from pki import tsa_asn1
from pki.ca import TSA, CertificateAuthority
from pki.certpolicy import POLICY_TIMESTAMPING, policy_oid
from pki.errors import PkiError
from pki.keystore import Signer
from pki.service_key import active_service_key, certify_service_key, signer_subject

# RFC 3161 §2.4.2 accuracy: our clock is NTP-disciplined; we state one second
ACCURACY_SECONDS = 1
TSA_RENEW_BEFORE = dt.timedelta(days=60)  # `cityid init` renews the TSA certificate this early
MAX_REQUEST = 16 * 1024  # a TimeStampReq with a SHA-512 imprint and a nonce is ~100 octets

# hash algorithms we accept in a messageImprint, with their digest sizes (RFC 3161 §2.4.1:
# the TSA SHOULD check that the hash algorithm is known and the value has the right length)
_DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64, "sha3_256": 32, "sha3_384": 48, "sha3_512": 64}
_ALGORITHMS = {  # NIST hash algorithm OIDs (RFC 5754 §2, RFC 8702 §2)
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
    "2.16.840.1.101.3.4.2.8": "sha3_256",
    "2.16.840.1.101.3.4.2.9": "sha3_384",
    "2.16.840.1.101.3.4.2.10": "sha3_512",
}


class TsaUnavailable(PkiError):
    code = "tsa_unavailable"
    description = "no active time-stamping certificate: run `cityid init`"


@dataclass(frozen=True)
class TimeStampAnswer:
    """One answer: the DER TimeStampResp and, for the audit, what was decided."""

    der: bytes
    granted: bool
    serial: int | None = None
    fail_info: str | None = None  # RFC 3161 §2.4.2 PKIFailureInfo name
    reason: str = ""


@dataclass(frozen=True)
class TsaCertificate:
    serial: str
    key_ref: str
    certificate: x509.Certificate
    not_after: dt.datetime


class TimeStamper:
    """Signs time-stamp tokens with one TSA certificate and key."""

    def __init__(self, tsa: TsaCertificate, signer: Signer, policy: str, chain: tuple[x509.Certificate, ...]):
        self.tsa = tsa
        self._signer = signer
        self.policy = policy  # dotted OID: <arc>.1.5
        self.chain = chain  # issuing CA, root (for callers that embed it)
        der = tsa.certificate.public_bytes(serialization.Encoding.DER)
        self._cert = asn1_x509.Certificate.load(der)
        # RFC 5816 §2.2.1 / RFC 5035: signing-certificate-v2 with the SHA-256 ESSCertIDv2
        signing_cert_attr = cms.CMSAttribute(
            {
                "type": "signing_certificate_v2",
                "values": [
                    tsp.SigningCertificateV2(
                        {
                            "certs": [
                                tsp.ESSCertIDv2(
                                    {
                                        "hash_algorithm": {"algorithm": "sha256"},
                                        "cert_hash": hashlib.sha256(der).digest(),
                                        "issuer_serial": {
                                            "issuer": [
                                                asn1_x509.GeneralName({"directory_name": self._cert.issuer})
                                            ],
                                            "serial_number": self._cert.serial_number,
                                        },
                                    }
                                )
                            ]
                        }
                    )
                ],
            }
        )
        sid = cms.SignerIdentifier(
            {
                "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                    {"issuer": self._cert.issuer, "serial_number": self._cert.serial_number}
                )
            }
        )
        tsa_name = asn1_x509.GeneralName({"directory_name": self._cert.subject})
        # The parts every token shares, kept as DER and loaded (lazily) per token: asn1crypto
        # re-encodes a value built from Python data on every dump (~10 ms for the ESSCertIDv2
        # attribute), but copies the bytes of a value it loaded.
        self._signing_cert_attr_der = signing_cert_attr.dump()
        self._sid_der = sid.dump()
        self._tsa_name_der = tsa_name.dump()
        self._cert_der = der
        # the constant parts, made once by asn1crypto, carried by the encoder as they are
        self._signing_cert_attr = tsa_asn1.tlv(self._signing_cert_attr_der)
        self._sid = tsa_asn1.tlv(self._sid_der)
        self._tsa_name = tsa_asn1.tlv(self._tsa_name_der)
        self._certificate = tsa_asn1.tlv(der)
        self._policy_oid = x509.ObjectIdentifier(policy)

    # -- the protocol --------------------------------------------------------------------

    def respond(self, request_der: bytes, *, now: dt.datetime | None = None) -> TimeStampAnswer:
        """A DER TimeStampResp for a DER TimeStampReq (RFC 3161 §2.4)."""
        if len(request_der) > MAX_REQUEST:
            return rejection("bad_request", "request too large")
        try:
            req = asn1.decode_der(tsa_asn1.TimeStampReqView, request_der)  # strict DER
            imprint = req.message_imprint.parse(tsa_asn1.MessageImprintView)
        except ValueError as exc:
            return rejection("bad_data_format", f"not a DER TimeStampReq: {str(exc)[:80]}")
        version = req.version
        algorithm = _ALGORITHMS.get(imprint.hash_algorithm.algorithm.dotted_string, "")
        digest = imprint.hashed_message
        policy = None if req.req_policy is None else req.req_policy.dotted_string
        nonce = req.nonce
        cert_req = req.cert_req
        extensions = req.extensions
        if version != 1:  # RFC 3161 §2.4.1: version INTEGER { v1(1) }
            return rejection("bad_request", f"unsupported version {version!r}")
        if algorithm not in _DIGEST_SIZES:  # RFC 3161 §2.4.2: badAlg
            oid = imprint.hash_algorithm.algorithm.dotted_string
            return rejection("bad_alg", f"hash algorithm {oid} not accepted")
        if len(digest) != _DIGEST_SIZES[algorithm]:
            # RFC 3161 §2.4.1: the TSA SHOULD check the length of the hashed message
            return rejection("bad_data_format", "hashedMessage has the wrong length for its algorithm")
        if policy is not None and policy != self.policy:  # RFC 3161 §2.4.2: unacceptedPolicy
            return rejection("unaccepted_policy", f"policy {policy} not offered")
        if extensions:  # RFC 3161 §2.4.2: unacceptedExtension (we support none)
            return rejection("unaccepted_extensions", "no request extensions are supported")
        if nonce is not None and not 0 <= nonce < 2**512:
            return rejection("bad_request", "nonce out of range")
        serial = new_token_serial()
        token = self._token(req.message_imprint, nonce, cert_req, serial, now or utcnow())
        resp = tsa_asn1.TimeStampResp(
            status=tsa_asn1.PKIStatusInfo(status=0), time_stamp_token=token
        )  # granted
        return TimeStampAnswer(asn1.encode_der(resp), True, serial)

    def stamp(
        self,
        digest: bytes,
        *,
        algorithm: str = "sha256",
        nonce: int | None = None,
        now: dt.datetime | None = None,
    ) -> cms.ContentInfo:
        """In process: a token (ContentInfo/SignedData, certificate included) for ``digest``."""
        if algorithm not in _DIGEST_SIZES or len(digest) != _DIGEST_SIZES[algorithm]:
            raise PkiError(f"digest does not match {algorithm}")
        imprint = tsp.MessageImprint({"hash_algorithm": {"algorithm": algorithm}, "hashed_message": digest})
        token = self._token(tsa_asn1.tlv(imprint.dump()), nonce, True, new_token_serial(), now or utcnow())
        return cms.ContentInfo.load(asn1.encode_der(token))

    def _token(
        self, imprint: asn1.TLV, nonce: int | None, cert_req: bool, serial: int, now: dt.datetime
    ) -> tsa_asn1.ContentInfo:
        tst_info = asn1.encode_der(
            tsa_asn1.TSTInfo(
                version=1,
                policy=self._policy_oid,  # RFC 3161 §2.4.2: the TSA's policy
                message_imprint=imprint,  # RFC 3161 §2.4.2: the same as the request's
                serial_number=serial,
                gen_time=asn1.GeneralizedTime(now.astimezone(dt.UTC)),
                accuracy=tsa_asn1.Accuracy(seconds=ACCURACY_SECONDS),
                nonce=nonce,  # RFC 3161 §2.4.2: MUST be present if it was in the request
                tsa=self._tsa_name,
            )
        )
        attrs: asn1.SetOf[tsa_asn1.Attribute | asn1.TLV] = asn1.SetOf(
            [
                # RFC 5652 §11.1 / RFC 3161 §2.4.2: eContentType id-ct-TSTInfo
                tsa_asn1.Attribute(
                    attr_type=tsa_asn1.ID_CONTENT_TYPE, attr_values=asn1.SetOf([tsa_asn1.ID_CT_TST_INFO])
                ),
                # RFC 5652 §11.2: the digest of the eContent
                tsa_asn1.Attribute(
                    attr_type=tsa_asn1.ID_MESSAGE_DIGEST,
                    attr_values=asn1.SetOf([hashlib.sha256(tst_info).digest()]),
                ),
                self._signing_cert_attr,  # RFC 5816 §2.2.1
            ]
        )
        # RFC 5652 §5.4: the signature covers the DER of the attributes as a SET OF
        signature = self._signer.sign(tsa_asn1.set_of_der(attrs), ec.ECDSA(hashes.SHA256()))
        signer_info = tsa_asn1.SignerInfo(
            version=1,
            sid=self._sid,
            digest_algorithm=tsa_asn1.AlgorithmIdentifier(algorithm=tsa_asn1.ID_SHA256),
            signed_attrs=attrs,
            signature_algorithm=tsa_asn1.AlgorithmIdentifier(algorithm=tsa_asn1.ECDSA_WITH_SHA256),
            signature=signature,
        )
        signed_data = tsa_asn1.SignedData(
            version=3,  # RFC 5652 §5.1: eContentType other than id-data
            digest_algorithms=asn1.SetOf([tsa_asn1.AlgorithmIdentifier(algorithm=tsa_asn1.ID_SHA256)]),
            encap_content_info=tsa_asn1.EncapsulatedContentInfo(
                content_type=tsa_asn1.ID_CT_TST_INFO, content=tst_info
            ),
            # RFC 3161 §2.4.1: certReq TRUE → the TSA's certificate MUST be included
            certificates=asn1.SetOf([self._certificate]) if cert_req else None,
            signer_infos=asn1.SetOf([signer_info]),
        )
        return tsa_asn1.ContentInfo(content_type=tsa_asn1.ID_SIGNED_DATA, content=signed_data)


def new_token_serial() -> int:
    """RFC 3161 §2.4.2: unique per token; 128 random bits, positive, ≤ 160 bits."""
    return secrets.randbits(127) | (1 << 127)


class _TimeStampResp(tsp.TimeStampResp):  # type: ignore[misc]
    """RFC 3161 §2.4.2: timeStampToken is OPTIONAL (absent in a rejection); asn1crypto 1.5
    declares it required."""

    _fields = [("status", tsp.PKIStatusInfo), ("time_stamp_token", cms.ContentInfo, {"optional": True})]


def rejection(fail_info: str, reason: str) -> TimeStampAnswer:
    status = tsp.PKIStatusInfo(
        {
            "status": "rejection",
            "status_string": [reason],
            "fail_info": tsp.PKIFailureInfo({fail_info}),
        }
    )
    return TimeStampAnswer(_TimeStampResp({"status": status}).dump(), False, None, fail_info, reason)


# -- the TSA certificate -----------------------------------------------------------------------


def active_tsa(session: Session, ca: CertificateAuthority) -> TsaCertificate | None:
    row = active_service_key(session, ca, TSA)
    if row is None:
        return None
    return TsaCertificate(row.serial, row.key_ref, x509.load_der_x509_certificate(row.der), row.not_after)


def load_time_stamper(
    session: Session, ca: CertificateAuthority, *, now: dt.datetime | None = None
) -> TimeStamper:
    """The TimeStamper of the active TSA certificate; :class:`TsaUnavailable` if none is valid."""
    now = now or utcnow()
    tsa = active_tsa(session, ca)
    if tsa is None or tsa.not_after <= now:
        raise TsaUnavailable()
    return TimeStamper(
        tsa,
        ca.key_store.signer(tsa.key_ref),
        policy_oid(ca.settings.policy_arc, POLICY_TIMESTAMPING).dotted_string,
        (ca.certificate, ca.root_certificate),
    )


def ensure_tsa(
    session: Session, ca: CertificateAuthority, *, actor: str = "system", now: dt.datetime | None = None
) -> TsaCertificate:
    """The active TSA certificate; a new key and certificate if there is none or it ends within
    ``TSA_RENEW_BEFORE`` (``cityid init``, also on an instance set up before the TSA). Commits."""
    now = now or utcnow()
    current = active_tsa(session, ca)
    if current is not None and current.not_after - now >= TSA_RENEW_BEFORE:
        return current
    return rotate_tsa(session, ca, actor=actor, now=now)


def rotate_tsa(
    session: Session, ca: CertificateAuthority, *, actor: str = "system", now: dt.datetime | None = None
) -> TsaCertificate:
    """A new TSA key in the key store and its ``timestamping`` certificate. Commits."""
    now = now or utcnow()
    key = certify_service_key(session, ca, TSA, signer_subject(ca, "TSA"), actor=actor, now=now)
    session.commit()
    issued = key.issued
    return TsaCertificate(issued.serial, key.key_ref, issued.certificate, issued.not_after)
