"""microsmtp: a small SMTP client with verified TLS for MicroPython and CPython.

``send()`` delivers one ``Message``; ``SMTP`` keeps a connection for several. Both
verify the server's certificate and hostname, use STARTTLS unless told otherwise, and
raise the typed errors of ``microsmtp.errors``.
"""

from .client import SMTP, send
from .errors import (
    AuthError,
    ClockNotSetError,
    ConfigError,
    ConnectionLost,
    InvalidInputError,
    ProtocolError,
    RecipientsRefused,
    ReplyError,
    SecurityError,
    SMTPError,
    Timeout,
)
from .message import Attachment, Message

__version__ = "0.1.0"
