"""Certificate policy OIDs (RFC 5280 §4.2.1.4) under the arc the city configures."""

from __future__ import annotations

import re

from cryptography.x509.oid import ObjectIdentifier

from pki.errors import BadRequest

# The certificate policy arc: `[ca] policy_arc` in the configuration. The default is a
# PLACEHOLDER under IANA PEN 32473, reserved for documentation (RFC 5612): a city sets an arc
# under its own Private Enterprise Number before production. (A UUID OID, 2.25.<uuid>, needs no
# registry, but its 128-bit arc and the 2.999 example arc both break common decoders, pkilint's
# included; hence the limit on each arc's size.) Below the arc: .1 the CA certificate policy,
# .1.1 device-auth, .1.2 tls-server, .1.3 document-seal, .1.4 ocsp-signer, .1.5 timestamping.
# The issuing CA's certificate asserts the CA policy and every one of these (RFC 5280 §6.1.3
# (d): a leaf's policy is only in the valid policy tree if the CA above asserts it or
# anyPolicy), so that a validator demanding an explicit policy accepts every profile.
PLACEHOLDER_POLICY_ARC = "1.3.6.1.4.1.32473.1"
_POLICY_ARC = re.compile(r"^[0-2](\.(0|[1-9][0-9]{0,17})){1,30}$")
POLICY_CA = "1"
POLICY_DEVICE_AUTH = "1.1"
POLICY_TLS_SERVER = "1.2"
POLICY_DOCUMENT_SEAL = "1.3"
POLICY_OCSP_SIGNER = "1.4"
POLICY_TIMESTAMPING = "1.5"
POLICY_CREDENTIAL_ISSUER = "1.6"  # the key that signs the city's wallet credentials (SD-JWT VC)
# Every policy an end-entity certificate of this CA may carry: a profile with a new policy adds
# it here, and `cityid init` re-certifies the issuing CA (same key) to assert it.
LEAF_POLICIES: tuple[str, ...] = (
    POLICY_DEVICE_AUTH,
    POLICY_TLS_SERVER,
    POLICY_DOCUMENT_SEAL,
    POLICY_OCSP_SIGNER,
    POLICY_TIMESTAMPING,
    POLICY_CREDENTIAL_ISSUER,
)


def policy_oid(arc: str, policy: str) -> ObjectIdentifier:
    """The OID of ``policy`` (one of the ``POLICY_*`` suffixes) under the configured ``arc``."""
    if not _POLICY_ARC.match(arc) or (arc[0] != "2" and int(arc.split(".")[1]) > 39):
        # X.660: under arcs 0 and 1 the second arc is 0-39
        raise BadRequest(f"ca.policy_arc is not a dotted OID of modest size: {arc!r}")
    return ObjectIdentifier(f"{arc}.{policy}")


def issuing_ca_policies(arc: str) -> list[ObjectIdentifier]:
    """What the issuing CA's certificatePolicies assert: the CA policy, then every leaf policy."""
    return [policy_oid(arc, p) for p in (POLICY_CA, *LEAF_POLICIES)]
