"""Helpers for the CA tests: CSRs, openssl, pkilint."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pkilint.bin import lint_crl, lint_ocsp_response, lint_pkix_cert

DEVICE_ID = "dev-0123456789abcdef"


def make_csr(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    *,
    subject: x509.Name | None = None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject or x509.Name([]))
    for value, critical in extensions:
        builder = builder.add_extension(value, critical)
    csr = builder.sign(key, algorithm or hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def name(**attrs: str) -> x509.Name:
    oids = {
        "CN": NameOID.COMMON_NAME,
        "O": NameOID.ORGANIZATION_NAME,
        "C": NameOID.COUNTRY_NAME,
        "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
        "E": NameOID.EMAIL_ADDRESS,
    }
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in attrs.items()])


def pem(obj: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)


def openssl_verify(tmp: Path, root: bytes, issuing: bytes, leaf: bytes, crls: Sequence[bytes]):
    """``openssl verify -x509_strict -crl_check`` (PEM inputs)."""
    args = [
        "verify",
        "-x509_strict",
        "-crl_check",
        "-CAfile",
        write(tmp / "root.pem", root),
        "-untrusted",
        write(tmp / "issuing.pem", issuing),
    ]
    for i, crl in enumerate(crls):
        args += ["-CRLfile", write(tmp / f"crl{i}.pem", crl)]
    args.append(write(tmp / "leaf.pem", leaf))
    return openssl(*args)


# RFC 5280 §4.2.1.6 wants a SAN URI to have a scheme and a scheme-specific part, and an FQDN
# only *if* it has an authority; an RFC 8141 URN has none. pkilint checks URIs with
# `validators.url`, which accepts web URLs only (pkilint PR #65, python-validators #346), so it
# reports our device URN. That one finding, for that one value, is a known false positive.
DEVICE_URN = re.compile(r"^urn:cityid:device:[A-Za-z0-9_-]{8,64}$")  # RFC 8141 §2 NSS subset
_URN_FALSE_POSITIVE = re.compile(
    r"GeneralNameUriSyntaxValidator @ [^\n]*subjectAltName[^\n]*uniformResourceIdentifier\n"
    r"\s+pkix\.invalid_uri_syntax \(ERROR\): Invalid URI syntax: \"(urn:cityid:device:[^\"]+)\"\n"
)


def _lint(main, args: list[str], der: bytes, tmp: Path) -> str:
    path = tmp / "lint.der"
    path.write_bytes(der)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["lint", "-s", "WARNING", *args, str(path)])
    if code == 0:
        return ""
    report = out.getvalue()
    for match in _URN_FALSE_POSITIVE.finditer(report):
        assert DEVICE_URN.match(match.group(1)), match.group(1)
    return _URN_FALSE_POSITIVE.sub("", report).strip()


def lint_certificate(der: bytes, tmp: Path) -> str:
    """pkilint RFC 5280 findings of severity WARNING or worse (empty: clean)."""
    return _lint(lint_pkix_cert.main, [], der, tmp)


def lint_crl_der(der: bytes, tmp: Path, *, kind: str = "CRL") -> str:
    return _lint(lint_crl.main, ["-t", kind, "-p", "PKIX"], der, tmp)


def lint_ocsp(der: bytes, tmp: Path) -> str:
    return _lint(lint_ocsp_response.main, [], der, tmp)
