"""The wallet simulator for demos (TEST only; docs/wallet.md):

python -m walletsim init DIR --host localhost
    a TEST PID provider (DIR/pid-root.pem for [wallet] trust_anchors_file), a TEST verifier
    certificate for cityid (DIR/verifier.key, DIR/verifier.pem; trusted by this wallet through
    DIR/verifier-root.pem), a holder key and a PID for Erika Mustermann (DIR/pid.txt)
python -m walletsim answer DIR 'openid4vp://?client_id=...&request_uri=...'
    present the PID to cityid's request; prints the verifier's answer (open its redirect_uri
    in the browser that started, for the same-device flow)
python -m walletsim receive DIR 'openid-credential-offer://?...' TX_CODE
    receive the library card by its offer; prints the credential's disclosed claims
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from jwcrypto import jwk
from sd_jwt.holder import SDJWTHolder

from walletsim.holder import Holder, Receiver
from walletsim.pid import TestPidProvider, make_ca, make_leaf


def _pem(obj: object) -> bytes:
    if hasattr(obj, "private_bytes"):
        return bytes(
            obj.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return bytes(obj.public_bytes(serialization.Encoding.PEM))  # type: ignore[attr-defined]


def _holder(directory: Path) -> Holder:
    roots = x509.load_pem_x509_certificates((directory / "verifier-root.pem").read_bytes())
    key = jwk.JWK.from_json((directory / "holder.jwk").read_text())
    return Holder(
        list(roots), requests.get, requests.post, key=key, credentials=[(directory / "pid.txt").read_text()]
    )


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "init":
        directory = Path(argv[1])
        host = argv[argv.index("--host") + 1] if "--host" in argv else "localhost"
        provider = TestPidProvider()
        provider.save(directory)
        ca_key, ca = make_ca("TEST wallet verifier CA")
        v_key, v_cert = make_leaf(ca_key, ca, "cityid TEST verifier", dns=host)
        (directory / "verifier.key").write_bytes(_pem(v_key))
        (directory / "verifier.pem").write_bytes(_pem(v_cert) + _pem(ca))
        (directory / "verifier-root.pem").write_bytes(_pem(ca))
        key = jwk.JWK.generate(kty="EC", crv="P-256")
        (directory / "holder.jwk").write_text(key.export(private_key=True))
        pid, _idx = provider.issue(key, with_status=False)
        (directory / "pid.txt").write_text(pid)
        print(
            "[wallet]\nenabled = true\nsimulation = true\n"
            f'trust_anchors_file = "{directory / "pid-root.pem"}"\n'
            f'verifier_key_file = "{directory / "verifier.key"}"\n'
            f'verifier_cert_file = "{directory / "verifier.pem"}"'
        )
        return 0
    if len(argv) == 3 and argv[0] == "answer":
        resp = _holder(Path(argv[1])).answer(argv[2])
        print(resp.status_code, resp.text)
        return 0 if resp.status_code == 200 else 1
    if len(argv) == 4 and argv[0] == "receive":
        holder = _holder(Path(argv[1]))
        receiver = Receiver(holder)
        token, offer = receiver.redeem_offer(argv[2], argv[3])
        if token.status_code != 200:
            print(token.status_code, token.text)
            return 1
        resp = receiver.request(offer["credential_issuer"], token.json()["access_token"])
        if resp.status_code != 200:
            print(resp.status_code, resp.text)
            return 1
        credential = resp.json()["credentials"][0]["credential"]
        disclosed = [json.loads(SDJWTHolder._base64url_decode(d)) for d in credential.split("~")[1:-1]]
        print(json.dumps({name: value for _salt, name, value in disclosed}, ensure_ascii=False, indent=2))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
