"""Application factory."""

from __future__ import annotations

import importlib

from flask import Flask

from db import make_engine, make_session_factory
from idp.config import Config
from idp.runtime import Runtime

# One module per endpoint group; each exposes ``bp`` (a Blueprint).
VIEW_MODULES = ["idp.views.pki"]


def create_app(config: Config, *, check_schema: bool = True) -> Flask:
    app = Flask(__name__)
    engine = make_engine(config.db_url)
    if check_schema:
        from db.migrate import check_schema as _check

        _check(engine)
    app.extensions["cityid"] = Runtime(config, engine, make_session_factory(engine))
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    for name in VIEW_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        app.register_blueprint(module.bp)
    return app
