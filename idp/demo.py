"""The demo: a local instance with a demo service (relying party) and a demo citizen."""

from __future__ import annotations

import dataclasses
import json
import secrets
from pathlib import Path

from db import make_engine, make_session_factory, transaction
from idp.accounts import create_account, find_by_email
from idp.clients import ClientSpec, add_client
from idp.config import Config
from idp.instance import InstanceKeys
from idp.models import Client
from idp.setup import init_instance

DEMO_EMAIL = "buerger@musterstadt.example"
DEMO_CLIENT = "demo-service"


def prepare_demo(data_dir: Path, *, issuer: str) -> tuple[Config, str]:
    cfg = init_instance(data_dir, issuer=issuer)
    cfg = dataclasses.replace(cfg, issuer=issuer)
    keys = InstanceKeys.from_config(cfg)
    engine = make_engine(cfg.db_url)
    demo_file = data_dir / "demo.json"
    with transaction(make_session_factory(engine)) as s:
        if s.get(Client, DEMO_CLIENT) is None:
            _row, secret = add_client(
                s,
                keys,
                ClientSpec(
                    name="Demo-Bürgerservice",
                    client_id=DEMO_CLIENT,
                    redirect_uris=[f"{issuer}/demo/callback"],
                    post_logout_redirect_uris=[f"{issuer}/demo/"],
                    backchannel_logout_uri=f"{issuer}/demo/backchannel-logout",
                ),
                actor="demo",
            )
            demo = {"client_secret": secret, "password": secrets.token_urlsafe(9)}
            demo_file.write_text(json.dumps(demo))
            demo_file.chmod(0o600)
        demo = json.loads(demo_file.read_text())
        if find_by_email(s, keys, DEMO_EMAIL) is None:
            create_account(s, keys, DEMO_EMAIL, demo["password"], verified=True, actor="demo")
    engine.dispose()
    info = (
        f"\ncityid demo is running at {issuer}\n"
        f"  demo service:  {issuer}/demo/\n"
        f"  demo citizen:  {DEMO_EMAIL}  /  password {demo['password']}\n"
        f"  discovery:     {issuer}/.well-known/openid-configuration\n"
        f"  e-mails are written to {cfg.outbox_dir}\n"
    )
    return cfg, info
