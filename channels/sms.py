"""SMS: Kannel's sendsms interface, or a cloud SMS HTTP API.

Credentials:

* ``kannel`` — the office's Kannel administrator creates a ``sendsms-user``
  group in ``kannel.conf`` (``username``, ``password``, optionally
  ``forced-smsc``/``default-sender``) and tells you smsbox's
  ``sendsms-port``. warnd needs the sendsms URL
  (``http://kannel:13013/cgi-bin/sendsms``), the username, and the password
  in an environment variable or file (``password_env`` / ``password_file``).
  Delivery reports come back to ``/v1/receipts/sms``: set
  ``receipt_secret_env`` and make warnd reachable from smsbox
  (``receipts_url``).
* ``http`` — the cloud provider's console (阿里云短信, 腾讯云短信, a carrier's
  API) issues an API key or access key/secret and an approved signature
  (签名) and template; put the key in ``auth_value_env`` (or the signing
  secret in ``sign_secret_env``) and register
  ``https://warnd.example/v1/receipts/sms?secret=…`` as the status callback.

Both count text in UCS-2 units (70 single / 67 per part) and refuse a
number that is not a phone number before any request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from warnd.channel import Channel

from ._sms import SMS_LIMITS
from .sms_http import HttpSms
from .sms_kannel import KannelSms


class SmsChannel(Channel):
    """The ``sms`` channel family: ``provider = "kannel" | "http" | "sandbox"``."""

    name = "sms"
    limits = SMS_LIMITS
    batch_size = 100
    providers: ClassVar[Mapping[str, type[Channel]]] = {"kannel": KannelSms, "http": HttpSms}
