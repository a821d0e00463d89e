"""``/openapi.json``: docs/openapi.yaml (OpenAPI 3.1), read and converted once at start.

The YAML in docs/ is the one source (reviewed as documentation, checked by
openapi-spec-validator and exercised by schemathesis in the tests); the server answers it as
JSON with ``servers`` set to its own issuer, so tools pointed at a running instance
(``schemathesis run https://login.example/openapi.json``) test that instance.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import yaml
from flask import Flask, Response

log = logging.getLogger("cityid")

SPEC_FILE = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"


@functools.lru_cache(maxsize=4)
def _parsed(path: Path, mtime_ns: int, size: int) -> dict[str, Any]:
    """The parsed document, once per version of the file in this process (the tests build many
    apps); callers must not change it."""
    text = path.read_text(encoding="utf-8")
    # libyaml's safe loader where PyYAML was built with it: the same document for ~7x less CPU
    if yaml.__with_libyaml__:
        doc: dict[str, Any] = yaml.load(text, Loader=yaml.CSafeLoader)
    else:
        doc = yaml.safe_load(text)
    return doc


def load(issuer: str, path: Path = SPEC_FILE) -> bytes | None:
    """The document as JSON bytes for ``issuer``; None when the file is not installed."""
    try:
        st = path.stat()
    except FileNotFoundError:
        log.warning("%s not found: /openapi.json is not served", path)
        return None
    doc = {
        **_parsed(path, st.st_mtime_ns, st.st_size),
        "servers": [{"url": issuer, "description": "this instance"}],
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def init_app(app: Flask, issuer: str) -> None:
    body = load(issuer)
    if body is None:
        return

    def openapi() -> Response:
        resp = Response(body, mimetype="application/json")
        resp.cache_control.public = True
        resp.cache_control.max_age = 3600
        return resp

    app.add_url_rule("/openapi.json", "openapi", openapi, methods=["GET"])
