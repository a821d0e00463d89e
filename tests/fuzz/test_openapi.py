"""docs/openapi.yaml: valid OpenAPI 3.1, true to the routes, and schemathesis against the app.

In ``make test`` schemathesis drives the app in-process (WSGI) with a few examples per
operation; ``make fuzz`` runs it for minutes against a live ``cityid serve`` (see
tests/fuzz/test_live_schemathesis.py).
"""

from __future__ import annotations

from typing import Any

import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import positive_data_acceptance

from idp import openapi
from idp.app import JSON_PATHS
from tests.fuzz.conftest import LONG, STATS, STATUSES, Target, run_budgeted

METHODS = {"get", "post", "put", "patch", "delete"}
# JSON endpoints left out of the document on purpose
UNDOCUMENTED = {
    "/api/demo/resource",  # the demo relying service's resource (cityid demo), not an interface
}


def _document() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(openapi.SPEC_FILE.read_text(encoding="utf-8"))
    return doc


def test_openapi_document_is_valid_openapi_3_1(target: Target) -> None:
    doc = _document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # openapi-spec-validator: the 3.1 meta-schema and every $ref resolves
    served = target.anonymous().get("/openapi.json")
    assert served.status_code == 200 and served.mimetype == "application/json"
    body = served.get_json()
    validate(body)
    assert body["servers"] == [{"url": "http://localhost", "description": "this instance"}]
    assert body["paths"] == doc["paths"]


def _routes(target: Target) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {"/token": {"post"}}  # served in front of Flask (token_endpoint)
    for rule in target.app.url_map.iter_rules():
        routes.setdefault(rule.rule, set()).update(m.lower() for m in rule.methods or ())
    return routes


def test_openapi_document_names_only_routes_and_methods_that_exist(target: Target) -> None:
    routes = _routes(target)
    for path, item in _document()["paths"].items():
        assert path in routes, f"{path} is documented but not served"
        for method in set(item) & METHODS:
            assert method in routes[path], f"{method.upper()} {path} is documented but not served"


def test_every_json_endpoint_is_in_the_openapi_document(target: Target) -> None:
    documented = _document()["paths"]
    json_routes = [
        path
        for path in _routes(target)
        if path.startswith(JSON_PATHS)
        or path.startswith(("/login/webauthn/", "/account/security-keys/register/"))
        or path in ("/.well-known/openid-configuration", "/jwks.json", "/login/device/status")
    ]
    missing = sorted(p for p in json_routes if p not in documented and p not in UNDOCUMENTED)
    assert not missing, f"JSON endpoints missing from docs/openapi.yaml: {missing}"


def test_schemathesis_no_server_error_and_answers_match_the_document(target: Target) -> None:
    """not_a_server_error, status codes, content types, response schemas and headers as
    documented, for generated valid and invalid requests to every documented operation.

    (Driven by hand over ``as_strategy()``: schemathesis' own pytest plugin reads a node
    attribute pytest 9 no longer has.)"""
    api = schemathesis.openapi.from_wsgi("/openapi.json", target.app)
    operations = [result.ok() for result in api.get_all_operations()]
    documented = {f"{m.upper()} {p}" for p, item in _document()["paths"].items() for m in set(item) & METHODS}
    # schemathesis leaves out the document's own URL
    assert {f"{op.method.upper()} {op.path}" for op in operations} == documented - {"GET /openapi.json"}

    for operation in operations:
        run_budgeted(_exercise(operation), 0.12 / len(operations))


def _exercise(operation: Any) -> Any:
    """A hypothesis test of one operation. ``positive_data_acceptance`` is left out: a request
    the schema allows is not a valid one here (a DPoP proof, a device proof, a code or a client
    secret is a string to the schema but must verify), so its 4xx is right."""
    label = f"schemathesis {operation.method.upper()} {operation.path}"

    @settings(
        max_examples=300 if LONG else 4,
        deadline=None,
        derandomize=not LONG,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response = case.call()
        STATS[label][0] += 1
        STATUSES[label][response.status_code] += 1
        if response.status_code >= 500:
            STATS[label][1] += 1
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    return run
