"""/favicon.ico is an icon, not a 404 (issue 18 item 8)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from idp.config import BrandingConfig
from tests.idp.conftest import Idp


def test_favicon_is_a_cacheable_icon(idp: Idp, tmp_path: Path) -> None:
    r = requests.get(f"{idp.url}/favicon.ico", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/x-icon"
    assert "public" in r.headers["Cache-Control"] and "max-age" in r.headers["Cache-Control"]
    body = r.content
    reserved, kind, count = struct.unpack("<HHH", body[:6])
    assert (reserved, kind, count) == (0, 1, 1)  # ICONDIR: an icon with one image
    width, height, _colours, _res, _planes, bits, size, offset = struct.unpack("<BBBBHHII", body[6:22])
    assert (width, height, bits) == (32, 32, 32) and offset + size == len(body)
    if shutil.which("file"):  # libmagic reads it as an icon too
        (tmp_path / "f.ico").write_bytes(body)
        seen = subprocess.run(["file", "-b", str(tmp_path / "f.ico")], capture_output=True, text=True).stdout
        assert "icon resource" in seen and "32x32" in seen, seen


@pytest.mark.parametrize("colour, bgr", [("#c00000", (0x00, 0x00, 0xC0)), ("#0a0", (0x00, 0xAA, 0x00))])
def test_favicon_takes_the_city_colour(idp_factory: Any, colour: str, bgr: tuple[int, int, int]) -> None:
    idp = idp_factory(branding=BrandingConfig(primary_colour=colour))
    body = requests.get(f"{idp.url}/favicon.ico", timeout=10).content
    pixels = body[22 + 40 :]
    centre_row = 16 * 32 * 4  # a row in the middle, bottom-up: its left edge inside the square
    assert pixels[centre_row + 2 * 4 : centre_row + 2 * 4 + 4] == bytes((*bgr, 0xFF))
