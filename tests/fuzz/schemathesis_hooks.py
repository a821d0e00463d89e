"""schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.fuzz.schemathesis_hooks``): a PDF body
(``/api/signatures``, ``/api/signatures/validate``) is sent as raw bytes, like
``application/octet-stream``."""

from __future__ import annotations

import schemathesis

schemathesis.serializer.alias("application/pdf", "application/octet-stream")
