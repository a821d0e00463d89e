"""The EU wallet on one core: PID presentations verified per second and library cards issued
per second (docs/wallet.md). Prints JSON; bounded to a few seconds.

- ``verify_presentation``: the SD-JWT VC checks alone (x5c chain to the trust list, issuer
  signature, disclosures, KB-JWT, validity, status from a warm status list cache).
- ``wallet_response``: what the response URI does per answer: decrypt the direct_post.jwt JWE
  (ECDH-ES + A128GCM) and verify the presentation (``WalletConnector.finish``).
- ``issue_library_card``: verify the key proof and sign the SD-JWT VC with an in-memory
  (file key store) P-256 key; an HSM signs slower, see docs/wallet.md.

Targets (issue 16): >= 500 verifications/s, >= 300 issuances/s.
"""

from __future__ import annotations

import sys

sys.path[0] = __file__.rsplit("/bench/", 1)[0]

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey
from jwcrypto import jwe, jwk

from idp.eid.connector import EidRequest, EidResponse
from idp.eid.wallet.connector import Verifier, WalletConnector
from idp.eid.wallet.verify import StatusLists, TrustList, verify_presentation
from idp.vci import sdjwt
from walletsim.holder import Holder, Receiver
from walletsim.pid import TestPidProvider, b64der, make_ca, make_leaf

SECONDS = 1.5
AUD = "x509_san_dns:id.musterstadt.example"
NAMES = ["given_name", "family_name", "birthdate", "place_of_birth", "issuing_country"]


def _rate(fn: Callable[[], object]) -> dict[str, float]:
    fn()
    n, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while (wall := time.perf_counter() - wall0) < SECONDS:
        for _ in range(10):
            fn()
        n += 10
    cpu = time.process_time() - cpu0
    return {"per_wall_s": round(n / wall, 1), "per_cpu_s": round(n / cpu, 1)}


def main() -> None:
    provider = TestPidProvider(status_uri="https://pid.test.example/status/1")
    holder = Holder([], None, None)
    credential, _idx = provider.issue(holder.key)
    trust = TrustList.from_pem(provider.root_pem)
    status = StatusLists(trust, lambda uri: provider.status_list_token().encode())
    vp = holder.present(credential, NAMES, nonce="bench-nonce", aud=AUD)
    now = datetime.now(UTC)

    def verify() -> object:
        return verify_presentation(vp, trust=trust, nonce="bench-nonce", audience=AUD, now=now, status=status)

    # The whole response: the connector's own request (nonce, ephemeral key), an encrypted answer.
    ca_key, ca = make_ca("bench verifier CA")
    v_key, v_cert = make_leaf(ca_key, ca, "bench verifier", dns="id.musterstadt.example")
    from cryptography.hazmat.primitives import serialization

    pem = v_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    conn = WalletConnector(
        verifier=Verifier(ECKey.import_key(pem), (b64der(v_cert),), AUD),
        trust=trust,
        status=status,
        base_url="https://id.musterstadt.example",
        pseudonym_key=b"k" * 32,
    )
    started = conn.start(EidRequest())
    pending = started.pending
    enc_public = json.loads(pending.code_verifier)
    enc_public.pop("d")
    answer_vp = holder.present(credential, NAMES, nonce=pending.nonce, aud=AUD)
    body = json.dumps({"vp_token": {"pid": [answer_vp]}, "state": pending.relay_state}).encode()
    token = jwe.JWE(
        body, protected=json.dumps({"alg": "ECDH-ES", "enc": "A128GCM", "kid": pending.request_id})
    )
    token.add_recipient(jwk.JWK(**enc_public))
    response = EidResponse({"response": token.serialize(compact=True)}, pending)

    def finish() -> object:
        return conn.finish(response)

    # Issuance: proof check + SD-JWT VC signed by a P-256 key, x5c of two certificates.
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    x5c = [b64der(v_cert), b64der(ca)]
    receiver = Receiver(holder)
    proof = receiver.proof("https://id.musterstadt.example", "n" * 80)

    def issue() -> object:
        p = sdjwt.verify_proof(proof, audience="https://id.musterstadt.example", now=datetime.now(UTC))
        return sdjwt.sd_jwt_vc(
            issuer_key,
            x5c,
            plain={
                "iss": "https://id.musterstadt.example",
                "vct": sdjwt.LIBRARY_CARD_VCT,
                "iat": 0,
                "exp": 1,
            },
            disclosable={
                "given_name": "Erika",
                "family_name": "Mustermann",
                "card_number": "SB-0042-17",
                "valid_until": "2027-12-31",
                "library": "Stadtbibliothek Musterstadt",
            },
            holder_jwk=p.jwk,
        )

    results = {
        "verify_presentation": _rate(verify),
        "wallet_response": _rate(finish),
        "issue_library_card": _rate(issue),
        "targets": {"verifications_per_s": 500, "issuances_per_s": 300},
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
