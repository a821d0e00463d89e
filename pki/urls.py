"""The URLs the CA publishes and names in its certificates (AIA, CRL-DP).

The HTTP views (``idp/views/pki.py``) serve exactly these paths under the issuer base URL.
"""

from __future__ import annotations

from dataclasses import dataclass

PATH_CHAIN = "/pki/chain.pem"
PATH_ISSUING = "/pki/issuing.crt"
PATH_ROOT = "/pki/root.crt"
PATH_OCSP = "/pki/ocsp"
PATH_TSA = "/pki/tsa"  # RFC 3161 §3.4: time-stamp protocol over HTTP
PATH_FULL_CRL = "/pki/crl/full.crl"
PATH_ROOT_CRL = "/pki/crl/root.crl"


def path_shard_crl(shard: int) -> str:
    return f"/pki/crl/{shard}.crl"


@dataclass(frozen=True)
class CaUrls:
    base: str  # the issuer base URL, e.g. https://id.musterstadt.de

    def _url(self, path: str) -> str:
        return self.base.rstrip("/") + path

    @property
    def ocsp(self) -> str:
        return self._url(PATH_OCSP)

    @property
    def issuing_cert(self) -> str:
        return self._url(PATH_ISSUING)

    @property
    def tsa(self) -> str:
        return self._url(PATH_TSA)

    @property
    def root_cert(self) -> str:
        return self._url(PATH_ROOT)

    @property
    def chain(self) -> str:
        return self._url(PATH_CHAIN)

    @property
    def full_crl(self) -> str:
        return self._url(PATH_FULL_CRL)

    @property
    def root_crl(self) -> str:
        return self._url(PATH_ROOT_CRL)

    def shard_crl(self, shard: int) -> str:
        return self._url(path_shard_crl(shard))
