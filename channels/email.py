"""Email through SMTP (aiosmtplib).

Credentials: the office's mail administrator (or the provider: 腾讯企业邮,
阿里企业邮箱, 网易企业邮) creates a sending account and gives you the SMTP
host, port and security (STARTTLS on 587, implicit TLS on 465), the
username, and a password or "client authorization code" (客户端授权码) —
put it in ``password_env`` or ``password_file``. Ask for SPF/DKIM for the
sending domain so warnings are not filed as spam.

The connection is encrypted: ``security = "starttls"`` (port 587, the
default) or ``"tls"`` (implicit TLS, port 465); the relay's certificate is
verified against the system's CAs or, for a relay with a private CA,
``ca_file``. AUTH (the password) is only ever sent over TLS, unless
``security = "none"`` says the relay is a local one that needs none.

Each delivery is its own message (multipart text + HTML) with a
Message-ID made from the delivery id, so bounces and replies can be
traced; one SMTP connection carries the whole batch. Chinese subjects and
display names are RFC 2047 encoded; an internationalised address
(RFC 6531/6532) needs a server that offers SMTPUTF8. ``sent`` means the
relay accepted the message; a recipient the server refuses fails (5xx)
or is retried (4xx) while the rest of the batch is sent.
"""

from __future__ import annotations

import re
import secrets
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate
from typing import ClassVar, Literal, cast

import aiosmtplib
import structlog
from pydantic import Field, SecretStr

from warnd.channel import (
    Batch,
    Channel,
    ChannelConfig,
    ChannelContext,
    ChannelHealth,
    RateLimit,
    Receipt,
    Target,
    mask_address,
)
from warnd.limits import LengthUnit, MessageLimits
from warnd.model import Level

log = structlog.get_logger("warnd.channels.email")

EMAIL_LIMITS = MessageLimits(LengthUnit.CHARS, max_length=None, max_subject=78)
_ADDRESS = re.compile(r"^[^\s@<>,;\"]+@[^\s@<>,;\"]+\.[^\s@<>,;\"]+$")


class EmailConfig(ChannelConfig):
    provider: Literal["smtp"] = "smtp"
    host: str
    port: int | None = Field(default=None, ge=1, le=65535)
    """Default: 465 with ``tls``, 587 with ``starttls``, 25 with ``none``."""
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    from_address: str = Field(pattern=r"^[^\s@]+@[^\s@]+$")
    from_name: str = ""
    reply_to: str | None = None
    validate_certs: bool = True
    """Verify the relay's certificate and name (``false`` only on a test bench)."""
    ca_file: str | None = None
    """PEM CA bundle for a relay with a private CA (a relative path is taken
    like the configuration's other files)."""
    message_id_domain: str | None = None
    """Right-hand side of Message-IDs (default: the sender's domain)."""


class EmailChannel(Channel):
    name = "email"
    provider = "smtp"
    Config: ClassVar[type[ChannelConfig]] = EmailConfig
    limits = EMAIL_LIMITS
    batch_size = 100
    rate = RateLimit(10, 1.0)
    async_receipts = False
    idempotent = False

    def __init__(self, config: ChannelConfig, context: ChannelContext | None = None) -> None:
        super().__init__(config, context)
        self.cfg = cast(EmailConfig, config)
        self.domain = self.cfg.message_id_domain or self.cfg.from_address.rpartition("@")[2]
        ca = self.cfg.ca_file
        self.ca_file = str(self.context.path(ca)) if ca else None

    def limits_for(self, level: Level | None) -> MessageLimits:
        return self.limits

    def _client(self) -> aiosmtplib.SMTP:
        cfg = self.cfg
        return aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            timeout=self.timeout,
            use_tls=cfg.security == "tls",
            start_tls=cfg.security == "starttls",
            username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password else None,
            validate_certs=cfg.validate_certs,
            cert_bundle=self.ca_file,
        )

    def message(self, batch: Batch, target: Target) -> EmailMessage:
        """The message for one delivery (its Message-ID is the provider id)."""
        msg = EmailMessage(policy=SMTP_POLICY)
        msg["Subject"] = batch.subject or batch.text.splitlines()[0][:78]
        msg["From"] = Address(self.cfg.from_name, addr_spec=self.cfg.from_address)
        msg["To"] = Address(target.name, addr_spec=target.address)
        if self.cfg.reply_to:
            msg["Reply-To"] = self.cfg.reply_to
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = f"<{target.delivery_id}.{secrets.token_hex(4)}@{self.domain}>"
        if batch.identifier:
            msg["X-Warnd-Alert"] = batch.identifier
        msg["X-Warnd-Delivery"] = target.delivery_id
        if batch.level is not None:
            msg["X-Warnd-Level"] = batch.level.value
        msg.set_content(batch.text, charset="utf-8")
        if batch.html:
            msg.add_alternative(batch.html, subtype="html", charset="utf-8")
        return msg

    async def health(self) -> ChannelHealth:
        smtp = self._client()
        try:
            await smtp.connect()
            await smtp.noop()
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError) as exc:
            return ChannelHealth(False, f"smtp: {type(exc).__name__}: {exc}")
        return ChannelHealth(True, f"{self.cfg.host} answered")

    async def send(self, batch: Batch) -> list[Receipt]:
        receipts: dict[str, Receipt] = {}
        todo: list[Target] = []
        for t in batch.targets:
            if _ADDRESS.match(t.address):
                todo.append(t)
            else:
                receipts[t.delivery_id] = Receipt.failed(t.delivery_id, "not an email address")
        smtp = self._client()
        connected = False
        for target in todo:
            if not connected:
                try:
                    await smtp.connect()
                    connected = True
                except aiosmtplib.SMTPAuthenticationError as exc:
                    err = f"smtp refused the credentials: {exc.code} {exc.message}"
                    return self._rest(batch, receipts, err, after=60.0)
                except (aiosmtplib.SMTPException, OSError) as exc:
                    err = f"smtp: cannot connect: {type(exc).__name__}: {exc}"
                    return self._rest(batch, receipts, err, after=30.0)
            receipts[target.delivery_id], connected = await self._send_one(smtp, batch, target)
        if connected:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()
        return [receipts[t.delivery_id] for t in batch.targets]

    def _rest(
        self, batch: Batch, done: dict[str, Receipt], err: str, *, after: float
    ) -> list[Receipt]:
        log.warning("channel.send_failed", channel=self.name, error=err)
        return [
            done.get(t.delivery_id) or Receipt.retry(t.delivery_id, err, after=after)
            for t in batch.targets
        ]

    async def _send_one(
        self, smtp: aiosmtplib.SMTP, batch: Batch, target: Target
    ) -> tuple[Receipt, bool]:
        """Send one message; return its receipt and whether the connection is usable."""
        did = target.delivery_id
        msg = self.message(batch, target)
        mid = str(msg["Message-ID"])
        try:
            _, response = await smtp.send_message(msg)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0] if exc.recipients else None
            code = first.code if first is not None else 550
            text = first.message if first is not None else str(exc)
            return self._refused(did, target, code, text), True
        except (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError) as exc:
            return self._refused(did, target, exc.code, exc.message), True
        except aiosmtplib.SMTPSenderRefused as exc:
            return Receipt.retry(
                did,
                f"smtp refused the sender: {exc.code} {exc.message}",
                after=60.0,
                status=str(exc.code),
            ), True
        except aiosmtplib.SMTPNotSupported as exc:
            return Receipt.failed(did, f"smtp: {exc}"), True
        except (aiosmtplib.SMTPTimeoutError, aiosmtplib.SMTPServerDisconnected) as exc:
            # The message may or may not have been queued by the relay.
            smtp.close()
            return Receipt.uncertain(did, f"smtp: {type(exc).__name__}", provider_id=mid), False
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            return Receipt.retry(did, f"smtp: {type(exc).__name__}: {exc}", after=30.0), False
        log.info(
            "channel.sent",
            channel=self.name,
            delivery_id=did,
            to=mask_address(target.address),
            answer=response[:80],
        )
        return Receipt.sent(did, mid, status="250"), True

    def _refused(self, did: str, target: Target, code: int, text: str) -> Receipt:
        log.info(
            "channel.refused",
            channel=self.name,
            delivery_id=did,
            to=mask_address(target.address),
            status=code,
        )
        err = f"smtp refused the recipient: {code} {text}"
        if 400 <= code < 500:
            return Receipt.retry(did, err, after=300.0, status=str(code))
        return Receipt.failed(did, err, status=str(code))
