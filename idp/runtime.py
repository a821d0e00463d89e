"""What a running cityid process holds: config, engine, session factory. No global state."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from idp.config import Config


@dataclass
class Runtime:
    config: Config
    engine: Engine
    sessions: sessionmaker[Session]


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["cityid"]
    return rt
