"""Outgoing e-mail: SMTP when configured, else .eml files in the data dir's outbox (dev)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from db import new_id
from idp.config import Config


class MailError(RuntimeError):
    pass


def send(cfg: Config, to: str, subject: str, body: str) -> None:
    msg = EmailMessage()
    msg["From"] = cfg.smtp.sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain="cityid")
    msg.set_content(body)
    if not cfg.smtp.host:
        cfg.outbox_dir.mkdir(parents=True, exist_ok=True)
        (cfg.outbox_dir / f"{new_id()}.eml").write_bytes(bytes(msg))
        return
    try:
        with smtplib.SMTP(cfg.smtp.host, cfg.smtp.port, timeout=15) as smtp:
            if cfg.smtp.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if cfg.smtp.username:
                smtp.login(cfg.smtp.username, cfg.smtp.password)
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"could not send mail: {exc}") from exc
