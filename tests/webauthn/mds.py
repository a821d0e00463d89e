"""A TEST FIDO MDS3 blob: a JWT signed under a TEST MDS root made at run time (FIDO MDS3 §3.1).

Used to configure, for tests only, which authenticator models cityid trusts. Nothing signed
here is the FIDO Alliance's metadata.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from smartcard.evidence import make_intermediate, make_test_root

VECTORS = Path(__file__).parent / "vectors"
# Chrome's virtual authenticator (DevTools WebAuthn domain): AAGUID and its self-signed
# "Batch Certificate" (C=US, O=Chromium, OU=Authenticator Attestation), recorded from Chromium's
# virtual CTAP2 device; matched as an anchor by subject and key (RFC 5280 §6.1.1 (d)).
CHROMIUM_VIRTUAL_AAGUID = bytes.fromhex("01020304050607080102030405060708")
CHROMIUM_VIRTUAL_BATCH = x509.load_der_x509_certificate(
    (VECTORS / "chromium_virtual_authenticator_batch.der").read_bytes()
)


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def write_test_mds3(folder: Path, aaguid: bytes, root: x509.Certificate) -> tuple[Path, Path]:
    """Write a TEST MDS3 blob trusting ``root`` for ``aaguid`` and its signing root's PEM;
    returns (blob file, root file) for ``WebAuthnConfig``."""
    mds_root = make_test_root("cityid TEST FIDO MDS root")
    signer = make_intermediate(mds_root, "cityid TEST MDS signer", ca=False)
    h = aaguid.hex()
    payload = {
        "legalHeader": "TEST metadata for cityid's test suite; not from the FIDO Alliance",
        "no": 1,
        "nextUpdate": (dt.date.today() + dt.timedelta(days=30)).isoformat(),
        "entries": [
            {
                "aaguid": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
                "statusReports": [{"status": "FIDO_CERTIFIED_L1", "effectiveDate": "2025-01-01"}],
                "timeOfLastStatusChange": "2025-01-01",
                "metadataStatement": {
                    "description": "TEST: Chrome virtual authenticator, trusted for tests only",
                    "aaguid": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
                    "authenticatorVersion": 1,
                    "schema": 3,
                    "upv": [{"major": 1, "minor": 0}],
                    "attestationTypes": ["basic_full"],
                    "userVerificationDetails": [[{"userVerificationMethod": "presence_internal"}]],
                    "keyProtection": ["hardware", "secure_element"],
                    "matcherProtection": ["on_chip"],
                    "attachmentHint": ["internal"],
                    "tcDisplay": [],
                    "attestationRootCertificates": [
                        base64.b64encode(root.public_bytes(Encoding.DER)).decode()
                    ],
                },
            }
        ],
    }
    header = {"alg": "ES256", "typ": "JWT", "x5c": [base64.b64encode(signer.der).decode()]}
    message = _b64url(json.dumps(header).encode()) + b"." + _b64url(json.dumps(payload).encode())
    blob = message + b"." + _b64url(signer.key.sign(message, ec.ECDSA(hashes.SHA256())))
    blob_file, root_file = folder / "test-mds3.jwt", folder / "test-mds3-root.pem"
    blob_file.write_bytes(blob)
    root_file.write_bytes(mds_root.certificate.public_bytes(Encoding.PEM))
    return blob_file, root_file
