"""What the CA reads from configuration: the shape of ``idp.config.CaConfig``.

A protocol rather than an import, so that ``pki`` does not depend on the web layer above it.
"""

from __future__ import annotations

from typing import Protocol

from pki.keystore import KeyStoreSettings


class CaSettings(KeyStoreSettings, Protocol):
    @property
    def root_subject(self) -> str: ...
    @property
    def issuing_subject(self) -> str: ...
    @property
    def root_validity_days(self) -> int: ...
    @property
    def issuing_validity_days(self) -> int: ...
    @property
    def crl_next_update_hours(self) -> int: ...
    @property
    def crl_shards(self) -> int: ...
    @property
    def ocsp_validity_minutes(self) -> int: ...
    @property
    def policy_arc(self) -> str: ...
