"""The demo: a local instance with a demo service (relying party) and a demo citizen."""

from __future__ import annotations

import dataclasses
import json
import secrets
from pathlib import Path

from sqlalchemy.orm import Session

from db import make_engine, make_session_factory, transaction
from idp.accounts import create_account, find_by_email
from idp.clients import ClientSpec, add_client
from idp.config import Config
from idp.instance import InstanceKeys
from idp.models import Client
from idp.setup import init_instance

DEMO_EMAIL = "buerger@musterstadt.example"
DEMO_CLIENT = "demo-service"
DEMO_SCOPE = "openid profile email sign"
DEMO_DEVICE = "demo-device"  # the demo citizen's reference device (a soft token), in the data dir
DEMO_APP = "de.musterstadt.cityapp.demo"


def demo_smartcard(cfg: Config) -> Config:
    """The demo trusts a TEST attestation root of its own (in the data dir; never do this in
    production), so that its reference device reaches *substantial* and can sign."""
    from idp.config import SmartcardConfig
    from smartcard.softtoken import AttestationProfile, write_test_root

    root_dir = cfg.data_dir / "demo-attestation"
    if not (root_dir / "attestation-root.pem").exists():
        write_test_root(root_dir)
    status = root_dir / "attestation-status.json"
    if not status.exists():
        status.write_text('{"entries": {}}')
    profile = AttestationProfile(root_dir, package=DEMO_APP)
    sc: SmartcardConfig = dataclasses.replace(
        cfg.smartcard,
        android_package=DEMO_APP,
        android_signing_digests=profile.signing_digest.hex(),
        extra_android_roots_file=str(root_dir / "attestation-root.pem"),
        android_revocation_list_file=str(status),
    )
    return dataclasses.replace(cfg, smartcard=sc)


def enrol_demo_device(cfg: Config, session: Session, account_id: str) -> Path | None:
    """The demo citizen's reference device, enrolled once, directly (no app login needed):
    ``cityid device approve|sign --state <data dir>/demo-device`` confirms logins and signs."""
    import pki
    from attestation import AndroidApp, RevocationList, TrustStore
    from db import utcnow
    from smartcard import challenges
    from smartcard.enroll import EnrolRequest, enrol
    from smartcard.models import ENROL
    from smartcard.settings import SmartcardSettings
    from smartcard.softtoken import AttestationProfile, SoftToken, b64url_decode, load_test_root

    state = cfg.data_dir / DEMO_DEVICE
    if (state / "token.json").exists():
        return state
    root_dir = Path(cfg.smartcard.extra_android_roots_file).parent
    profile = AttestationProfile(root_dir, package=DEMO_APP)
    settings = SmartcardSettings(
        trust=TrustStore.of(
            google_roots=[load_test_root(root_dir).certificate],
            android_revocations=RevocationList.from_json(
                Path(cfg.smartcard.android_revocation_list_file).read_bytes(), fetched_at=utcnow()
            ),
        ),
        apps=(AndroidApp(DEMO_APP, frozenset({profile.signing_digest})),),
    )
    try:
        ca = pki.load_ca(
            session, cfg.ca, pki.open_key_store(cfg.ca, cfg.data_dir, cfg.key_passphrase), cfg.issuer
        )
    except pki.PkiError:  # no CA yet (`cityid init` makes it): no demo device
        return None
    token = SoftToken.create(state, server=cfg.issuer)
    issued, _row = challenges.create(
        session, purpose=ENROL, account_id=account_id, ttl=settings.challenge_ttl, now=utcnow()
    )
    evidence = token.attestation(b64url_decode(issued.value), profile)
    result = enrol(
        session,
        ca,
        settings,
        EnrolRequest(account_id, issued.value, token.csr(), evidence, "Demo-Smartphone"),
        now=utcnow(),
    )
    token.state.update(
        device_id=result.device_id,
        certificate=result.certificate_pem.decode(),
        chain=(result.certificate_pem + result.chain_pem).decode(),
    )
    session.commit()
    token.save()
    return state


def prepare_demo(data_dir: Path, *, issuer: str) -> tuple[Config, str]:
    cfg = init_instance(data_dir, issuer=issuer)
    cfg = demo_smartcard(dataclasses.replace(cfg, issuer=issuer))
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
                    scope=DEMO_SCOPE,  # sign: the "sign this form" button (docs/signing.md)
                ),
                actor="demo",
            )
            demo = {"client_secret": secret, "password": secrets.token_urlsafe(9)}
            demo_file.write_text(json.dumps(demo))
            demo_file.chmod(0o600)
        else:
            client = s.get(Client, DEMO_CLIENT)
            assert client is not None
            if "sign" not in client.scope.split():  # a demo data dir from before signing
                client.scope = DEMO_SCOPE
        demo = json.loads(demo_file.read_text())
        citizen = find_by_email(s, keys, DEMO_EMAIL)
        if citizen is None:
            citizen = create_account(s, keys, DEMO_EMAIL, demo["password"], verified=True, actor="demo")
        s.flush()
        device = enrol_demo_device(cfg, s, citizen.id)
    engine.dispose()
    info = (
        f"\ncityid demo is running at {issuer}\n"
        f"  demo service:  {issuer}/demo/\n"
        f"  demo citizen:  {DEMO_EMAIL}  /  password {demo['password']}\n"
        f"  discovery:     {issuer}/.well-known/openid-configuration\n"
        + (
            f"  demo device:   cityid device approve --state {device}   (confirms a login at substantial)\n"
            f"                 cityid device sign --state {device}      (signs the form the service sends)\n"
            if device is not None
            else ""
        )
        + f"  e-mails are written to {cfg.outbox_dir}\n"
    )
    return cfg, info
