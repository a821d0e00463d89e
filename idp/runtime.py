"""What a running cityid process holds: config, engine, sessions, keys. No global state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from idp.config import Config
from idp.instance import InstanceKeys
from idp.keys import KeyCache

if TYPE_CHECKING:
    from idp.mail import Courier


@dataclass
class Runtime:
    config: Config
    engine: Engine
    sessions: sessionmaker[Session]
    keys: InstanceKeys
    key_cache: KeyCache
    courier: Courier  # sends mails after their request committed (idp.mail)


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["cityid"]
    return rt
