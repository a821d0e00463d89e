"""Outgoing e-mail through a database outbox.

A view *queues* a mail in its own transaction, next to the link token the mail carries: both are
stored or neither is. The mail is handed to the mail server once that transaction has committed
(``uow.after_commit``), so that no database lock (SQLite's write lock, the audit chain's head row)
is held while a slow or unreachable mail server is waited for. A mail the server did not take
stays in the outbox and is retried by each worker's background duty with back-off; a process
that dies after the commit loses nothing. The page says the same whether the mail went out at
once or will be retried, so a mail server outage does not tell which addresses have accounts.

SMTP when configured, else .eml files in the data dir's outbox directory (development).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import smtplib
import ssl
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import idna
from cryptography.exceptions import InvalidTag
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import audit, first_unclaimed, new_id, transaction, utcnow
from idp.config import Config, SmtpConfig, smtp_problem
from idp.instance import InstanceKeys
from idp.models import MailOutbox

log = logging.getLogger("cityid")

MAX_ATTEMPTS = 8  # back-off 1, 2, 4 … 64 minutes: about two hours of retries
# A claimed mail is not claimed again for this long: more than one SMTP conversation can take
# (connect, STARTTLS, login and DATA each time out after 15 s).
LEASE = dt.timedelta(minutes=5)


class MailError(RuntimeError):
    pass


def smtp_address(address: str) -> str:
    """The address with an internationalised domain (anna@müller-bau.de) as its IDNA A-label
    (RFC 5891; anna@xn--mller-bau-q9a.de), which every mail server takes; an ASCII address
    unchanged. A non-ASCII local part still needs a server with SMTPUTF8 (RFC 6531)."""
    local, _, domain = address.rpartition("@")
    if domain.isascii():
        return address
    try:
        return f"{local}@{idna.encode(domain, uts46=True).decode()}"
    except idna.IDNAError as exc:
        raise MailError("not a valid domain name") from exc


def send(cfg: Config, to: str, subject: str, body: str, *, message_id: str | None = None) -> None:
    """Hand one message to the mail server (or write it to the development outbox).

    ``message_id``: the outbox row's, so that a message sent again after a crash between the
    server's acceptance and the row's removal (at-least-once delivery; bench/faults.py saw two
    in 1,424 under kill -9) is the same message to the mail servers and programs that drop a
    Message-ID they have already seen (RFC 5322 §3.6.4)."""
    address = smtp_address(to)
    msg = EmailMessage()
    msg["From"] = cfg.smtp.sender
    msg["To"] = address
    if str(msg["To"]) != address:  # e.g. RFC 2047 encoded-words, which the header parser decodes
        raise MailError("the address does not survive a mail header unchanged")
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = f"<{message_id}@cityid>" if message_id else make_msgid(domain="cityid")
    msg.set_content(body)
    if not cfg.smtp.host:
        cfg.outbox_dir.mkdir(parents=True, exist_ok=True)
        (cfg.outbox_dir / f"{new_id()}.eml").write_bytes(bytes(msg))
        return
    problem = smtp_problem(cfg.smtp)  # `cityid serve` refuses these; never send a password in clear
    if problem is not None:
        raise MailError(problem)
    try:
        with _connect(cfg.smtp) as smtp:
            if cfg.smtp.starttls:
                # RFC 3207: smtplib refuses (SMTPNotSupportedError) rather than go on in clear
                # when the server does not offer STARTTLS
                smtp.starttls(context=_tls_context(cfg.smtp))
            if cfg.smtp.username:
                smtp.login(cfg.smtp.username, cfg.smtp.password)
            smtp.send_message(msg, to_addrs=[address])  # the envelope: exactly the checked address
    except (OSError, smtplib.SMTPException) as exc:  # ssl.SSLError (e.g. an untrusted certificate) too
        raise MailError(f"could not send mail: {_failure(exc)}") from exc


def _failure(exc: Exception) -> str:
    """What went wrong, without the recipient's address: this text goes to the outbox row, the
    log and, after the last attempt, the audit log, whose entries erasure cannot change
    (GDPR Art. 17); a server's refusal of a recipient quotes the address."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _text in exc.recipients.values()})
        return f"recipient refused ({', '.join(map(str, codes))})"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__} ({exc.smtp_code})"
    return f"{type(exc).__name__}: {exc}"  # connection and TLS errors name no recipient


def _tls_context(smtp: SmtpConfig) -> ssl.SSLContext:
    # Certificate and host name checked (RFC 8314 §4.1, RFC 6125) against the system's trust store
    # or the city's own CA for an internal relay.
    return ssl.create_default_context(cafile=smtp.ca_file or None)


def _connect(smtp: SmtpConfig) -> smtplib.SMTP:
    if smtp.implicit_tls:  # RFC 8314 §3.3: TLS from the first byte (port 465)
        return smtplib.SMTP_SSL(
            smtp.host, smtp.port, timeout=smtp.timeout_seconds, context=_tls_context(smtp)
        )
    return smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds)


def queue_mail(
    session: Session, keys: InstanceKeys, to: str, subject: str, body: str, *, account_id: str | None = None
) -> str:
    """Store a mail in ``session``'s transaction; returns its id for :func:`deliver`.
    ``account_id``: the account it is about, whose erasure removes it if still unsent."""
    mail_id = new_id()
    message = json.dumps({"subject": subject, "body": body}).encode()
    session.add(
        MailOutbox(
            id=mail_id,
            next_attempt_at=utcnow(),
            recipient_enc=keys.personal_data.seal(to.encode(), f"mail-to:{mail_id}"),
            message_enc=keys.personal_data.seal(message, f"mail:{mail_id}"),
            account_id=account_id,
        )
    )
    return mail_id


def _claim(sessions: sessionmaker[Session], mail_id: str | None) -> tuple[str, bytes, bytes, int] | None:
    """Lease one due mail (``mail_id``, or the oldest due one): nobody else sends it meanwhile."""
    now = utcnow()
    with transaction(sessions) as s:
        q = select(MailOutbox).where(MailOutbox.next_attempt_at <= now)
        if mail_id is not None:
            q = q.where(MailOutbox.id == mail_id)
        row = first_unclaimed(s, q.order_by(MailOutbox.next_attempt_at))
        if row is None:
            return None
        row.attempts += 1
        row.next_attempt_at = now + LEASE
        return row.id, row.recipient_enc, row.message_enc, row.attempts


def _deliver_one(
    cfg: Config, keys: InstanceKeys, sessions: sessionmaker[Session], mail_id: str | None
) -> bool | None:
    """Send one due mail. True: sent; False: not taken (kept for a retry, or given up); None:
    none due."""
    claimed = _claim(sessions, mail_id)
    if claimed is None:
        return None
    mail_id, recipient_enc, message_enc, attempts = claimed
    error = ""
    try:
        to = keys.personal_data.open(recipient_enc, f"mail-to:{mail_id}").decode()
        message = json.loads(keys.personal_data.open(message_enc, f"mail:{mail_id}"))
        send(cfg, to, message["subject"], message["body"], message_id=mail_id)
    except MailError as exc:
        error = str(exc)[:500]
    except (InvalidTag, ValueError, KeyError) as exc:  # unreadable (other keys): retrying won't help
        error = f"unreadable: {type(exc).__name__}"
        attempts = MAX_ATTEMPTS
    with transaction(sessions) as s:
        row = s.get(MailOutbox, mail_id)
        if row is None:
            return not error
        if not error:
            s.delete(row)  # the message carries a one-time link: keep no copy
            return True
        if attempts >= MAX_ATTEMPTS:
            s.delete(row)
            audit.record(s, action="mail.give_up", outcome="failure", subject=mail_id, reason=error[:300])
            log.error("gave up sending mail %s after %s attempts: %s", mail_id, attempts, error)
        else:
            row.last_error = error
            row.next_attempt_at = utcnow() + dt.timedelta(minutes=2 ** (attempts - 1))
            log.warning("mail %s not sent (attempt %s), will retry: %s", mail_id, attempts, error)
        return False


def deliver(cfg: Config, keys: InstanceKeys, sessions: sessionmaker[Session], mail_id: str) -> bool:
    """Send the queued mail ``mail_id`` now, if it is still due; True if the server took it."""
    return _deliver_one(cfg, keys, sessions, mail_id) is True


def deliver_due(cfg: Config, keys: InstanceKeys, sessions: sessionmaker[Session], *, limit: int = 20) -> int:
    """Send up to ``limit`` mails whose (next) attempt is due, one lease each; how many were sent."""
    sent = 0
    for _ in range(limit):
        outcome = _deliver_one(cfg, keys, sessions, None)
        if outcome is None:
            break
        sent += outcome
    return sent


class Courier:
    """Each process's mail thread: sends each queued mail right after its request committed, and
    the due retries every few seconds. The request does not wait for the mail server: a page
    that sends a mail answers as fast as one that sends none (no account enumeration by timing),
    and a hanging mail server delays no other background duty (back-channel logouts)."""

    def __init__(
        self, cfg: Config, keys: InstanceKeys, sessions: sessionmaker[Session], interval: float = 5.0
    ) -> None:
        self._cfg, self._keys, self._sessions, self._interval = cfg, keys, sessions, interval
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = False
        self._stopped = threading.Event()

    def start(self) -> None:
        """Start the thread (once per process, after a fork: in the worker that uses it)."""
        with self._lock:
            if not self._started:
                self._started = True
                self._thread = threading.Thread(target=self._run, daemon=True, name="cityid-mail")
                self._thread.start()

    def post(self, mail_id: str) -> None:
        """Send this committed mail soon; if the process dies first, the retries send it."""
        self.start()
        self._queue.put(mail_id)

    def stop(self, wait: float = 0.0) -> bool:
        """End the thread after what it is doing (tests; a worker's shutdown); with ``wait``,
        wait that long for it. True when it has ended (or never ran)."""
        self._stopped.set()
        self._queue.put("")
        thread = getattr(self, "_thread", None)
        if thread is None:
            return True
        if wait > 0:
            thread.join(wait)
        return not thread.is_alive()

    def _run(self) -> None:
        retried = time.monotonic()
        while not self._stopped.is_set():
            wait = max(0.0, self._interval - (time.monotonic() - retried))
            try:
                mail_id = self._queue.get(timeout=wait)
            except queue.Empty:
                mail_id = ""
            try:
                if mail_id:
                    deliver(self._cfg, self._keys, self._sessions, mail_id)
                # the retries on a clock of their own: steady new mail must not starve them
                if not self._stopped.is_set() and time.monotonic() - retried >= self._interval:
                    retried = time.monotonic()
                    deliver_due(self._cfg, self._keys, self._sessions)
            except Exception:  # keep the thread alive; the outbox keeps what was not sent
                log.exception("mail delivery failed")


def send_after_commit(to: str, subject: str, body: str, *, account_id: str | None = None) -> None:
    """In a request: queue the mail in the request's transaction; once that has committed, the
    process's :class:`Courier` sends it (never if the request rolls back)."""
    from idp import uow
    from idp.runtime import runtime

    rt = runtime()
    mail_id = queue_mail(uow.db(), rt.keys, to, subject, body, account_id=account_id)
    uow.after_commit(lambda: rt.courier.post(mail_id))
