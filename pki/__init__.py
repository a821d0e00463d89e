"""cityid's certificate authority: keys, profiles, issuance, revocation, CRL, OCSP.

Takes a SQLAlchemy session and returns frozen dataclasses; never imports Flask. See README.md.
"""

from pki.ca import CertificateAuthority, load_ca
from pki.errors import PkiError
from pki.issuance import IssueHooks, IssueRequest, IssueResult, issue, issue_batch, load_csr
from pki.keystore import FileKeyStore, KeyStore, Signer, open_key_store
from pki.ocsp import OcspAnswer, decode_get_path, respond
from pki.profiles import DEVICE_URN_PREFIX, PROFILES
from pki.revocation import (
    REASON_CODES,
    CertificateStatus,
    list_certificates,
    reinstate,
    revoke,
    revoke_abandoned,
    status,
    status_by_fingerprint,
    status_of_certificate,
)
from pki.setup import CaInitResult, check_key_store, init_ca, rotate_ocsp_signer

__all__ = [
    "DEVICE_URN_PREFIX",
    "PROFILES",
    "REASON_CODES",
    "CaInitResult",
    "CertificateAuthority",
    "CertificateStatus",
    "FileKeyStore",
    "IssueHooks",
    "IssueRequest",
    "IssueResult",
    "KeyStore",
    "OcspAnswer",
    "PkiError",
    "Signer",
    "check_key_store",
    "decode_get_path",
    "init_ca",
    "issue",
    "issue_batch",
    "list_certificates",
    "load_ca",
    "load_csr",
    "open_key_store",
    "reinstate",
    "respond",
    "revoke",
    "revoke_abandoned",
    "rotate_ocsp_signer",
    "status",
    "status_by_fingerprint",
    "status_of_certificate",
]
