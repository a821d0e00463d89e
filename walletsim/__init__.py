"""A wallet simulator for tests and demos: a TEST PID provider (its own TEST trust anchor) and a
holder that answers OpenID4VP requests. Never for real citizens.

Built on independent libraries (the OpenWallet Foundation's ``sd-jwt`` reference implementation
and ``jwcrypto``), never on cityid's own verifier, so that each side checks the other.
"""

from walletsim.holder import Holder
from walletsim.pid import TestPidProvider

__all__ = ["Holder", "TestPidProvider"]
