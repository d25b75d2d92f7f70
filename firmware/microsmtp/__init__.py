"""microsmtp: a small SMTP client with verified TLS for MicroPython and CPython.

``send()`` delivers one ``Message``; ``SMTP`` keeps a connection for several. Both
verify the server's certificate and hostname, use STARTTLS unless told otherwise, and
raise the typed errors of ``microsmtp.errors``.
"""

import gc as _gc
import sys as _sys

from .client import SMTP, send
from .errors import (
    AuthError,
    ClockNotSetError,
    ConfigError,
    ConnectionLost,
    InvalidInputError,
    OutOfMemory,
    ProtocolError,
    RecipientsRefused,
    ReplyError,
    SecurityError,
    SMTPError,
    Timeout,
)

if _sys.implementation.name == "micropython":
    # Free the garbage that loading the SMTP modules left before the message modules
    # load, so that their objects fill those holes and the heap stays less fragmented.
    _gc.collect()

from .message import Attachment, Message  # noqa: E402

__version__ = "0.1.0"
