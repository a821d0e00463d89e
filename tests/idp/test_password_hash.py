"""Passwords are stored as argon2id at the OWASP parameters (m=19 MiB, t=2, p=1).

The test process hashes at a lower cost (tests/conftest.py); these tests check what production
uses: the parameters themselves, and a hash made by a `cityid` command in a process of its own."""

from __future__ import annotations

import subprocess
import sys

from argon2 import PasswordHasher

from idp.crypto import ARGON2_PARAMETERS
from tests.idp.serve_process import ROOT


def test_production_hashes_are_argon2id_at_owasp_parameters() -> None:
    assert ARGON2_PARAMETERS == {"time_cost": 2, "memory_cost": 19456, "parallelism": 1}
    hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
    assert hasher.hash("x").startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_a_cityid_process_hashes_at_the_production_parameters() -> None:
    """Outside the test process nothing lowers the cost: idp.crypto's own hasher."""
    code = "from idp.crypto import hash_password; print(hash_password('correct horse'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.startswith("$argon2id$v=19$m=19456,t=2,p=1$"), out
