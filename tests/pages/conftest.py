"""Fixtures for the citizen pages: the provider's real parts (tests/idp) and fresh catalogues."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from tests.idp.conftest import (  # noqa: F401  (fixtures)
    Browser,
    Idp,
    csrf,
    idp,
    idp_factory,
    logout_receiver,
    smtp_server,
)

TRANSLATIONS = Path(__file__).resolve().parents[2] / "idp" / "translations"


def compile_catalogues() -> None:
    """Compile each .po whose .mo is missing or older (``make`` does this at install too).

    Written to a temporary file and renamed, so that parallel workers never read half a file.
    """
    for po in TRANSLATIONS.glob("*/LC_MESSAGES/messages.po"):
        mo = po.with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        with po.open("rb") as f:
            catalog = read_po(f, locale=po.parts[-3])
        fd, tmp = tempfile.mkstemp(dir=po.parent, suffix=".mo.tmp")
        with os.fdopen(fd, "wb") as out:
            write_mo(out, catalog)
        os.replace(tmp, mo)


@pytest.fixture(scope="session", autouse=True)
def _catalogues() -> None:
    compile_catalogues()
