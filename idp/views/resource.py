"""A demo protected resource: what a city service's API does with cityid tokens."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from idp.oauth.resource import ResourceError, authenticate

bp = Blueprint("resource", __name__)


@bp.route("/api/demo/resource", methods=["GET", "POST"])
def demo_resource() -> Any:
    try:
        claims = authenticate()
    except ResourceError as err:
        return err.response()
    return jsonify(
        message="access granted",
        sub=claims.get("sub"),
        client_id=claims.get("client_id"),
        acr=claims.get("acr"),
        bound_to=(claims.get("cnf") or {}),
    )
