"""Error types raised by microsmtp.

Every error carries the stage of the dialogue where it happened and a ``transient``
flag: True when trying again later can succeed (a 4xx reply, a lost connection, a
timeout), False when the same attempt will fail the same way (a 5xx reply, a failed
certificate check, rejected credentials, invalid input). An outbox retries transient
errors and sets permanent ones aside.

The hierarchy uses single inheritance only, because MicroPython resolves methods of
multiply-inherited exceptions differently from CPython.
"""


class SMTPError(Exception):
    """Root of every microsmtp error.

    ``code`` and ``enhanced`` are the server's reply code and enhanced status code
    (``"5.7.8"``) when a reply caused the error, ``text`` is the reply text, and
    ``stage`` names the step of the dialogue (``"greeting"``, ``"ehlo"``, ``"starttls"``,
    ``"tls"``, ``"auth"``, ``"mail"``, ``"rcpt"``, ``"data"``, ``"message"``, ``"quit"``,
    ``"connect"``).
    """

    transient = False  # type: bool | None

    def __init__(self, message, code=None, enhanced=None, text="", stage=None):
        # The message is the only argument, so str(error) returns it on both runtimes.
        super().__init__(message)
        self.message = message
        self.code = code
        self.enhanced = enhanced
        self.text = text
        self.stage = stage
        if self.transient is None:
            # A class that decides per reply (ReplyError): a 4xx reply is transient.
            self.transient = code is not None and 400 <= code < 500


class InvalidInputError(SMTPError):
    """Input from the caller that cannot be sent safely, such as CR or LF in a header."""


class ConfigError(SMTPError):
    """A missing or invalid option, detected before anything is sent."""


class ClockNotSetError(ConfigError):
    """The system clock is before any valid certificate date, so TLS cannot verify.

    Transient: setting the clock (NTP) and trying again succeeds.
    """

    transient = True


class ReplyError(SMTPError):
    """The server replied to a command with an error code; transient for a 4xx reply."""

    transient = None


class AuthError(ReplyError):
    """The server rejected authentication, or no usable mechanism is offered."""


class RecipientsRefused(ReplyError):
    """The server refused every recipient of a message.

    ``refused`` maps each recipient address to the Reply that refused it. The error is
    transient only when every refusal was a 4xx reply. ``code``, ``enhanced`` and
    ``text`` are those of the first refusal in ``order`` (the addresses in the order
    they were sent, else the order of ``refused``) that is permanent, or of the first
    refusal when all are transient, so that ``code`` agrees with ``transient``.
    """

    def __init__(self, message, refused, stage="rcpt", order=()):
        transient = True
        for reply in refused.values():
            if not 400 <= reply.code < 500:
                transient = False
        first = None
        for address in list(order) + list(refused):
            reply = refused.get(address)
            if reply is not None and (transient or not 400 <= reply.code < 500):
                first = reply
                break
        code = first.code if first else None
        enhanced = first.enhanced if first else None
        text = first.text if first else ""
        super().__init__(message, code, enhanced, text, stage)
        self.refused = refused
        self.transient = transient
        self._order = order

    def __reduce__(self):
        # pickle and copy (CPython) call the class with these arguments.
        return (RecipientsRefused, (self.message, self.refused, self.stage, self._order))


class ProtocolError(SMTPError):
    """The server sent data that breaks the SMTP protocol (a malformed or unexpected reply).

    Transient, because a server or path fault can clear, and an alert must stay queued.
    """

    transient = True


class SecurityError(SMTPError):
    """TLS could not be established or verified, or STARTTLS was required but unavailable."""


class ConnectionLost(SMTPError):
    """The connection failed or closed before the dialogue finished."""

    transient = True


class OutOfMemory(ConnectionLost):
    """Too little free memory for the connection, mostly for the TLS buffers.

    Transient: the connection is closed, and a later attempt can find the memory free.
    """


# Raised when the heap is too short even to build an OutOfMemory with its details.
_SPARE = OutOfMemory("out of memory (too little heap left to describe it)")


def free_heap():
    """Return ", N bytes free" for messages on MicroPython; CPython's gc does not report it."""
    try:
        from gc import mem_free
    except ImportError:
        return ""
    return ", %d bytes free" % mem_free()


def out_of_memory(stage, cause):
    """Return the OutOfMemory for a lack of heap during stage.

    ``cause`` is the MemoryError, or a text naming the failure. The message is short,
    because it is built while memory is short.
    """
    try:
        if isinstance(cause, MemoryError):
            cause = "MemoryError: %s" % cause if str(cause) else "MemoryError"
        return OutOfMemory("out of memory during %s (%s%s)" % (stage, cause, free_heap()), stage=stage)
    except MemoryError:
        # The session must still end, and the caller still gets an OutOfMemory.
        _SPARE.stage = stage
        if hasattr(_SPARE, "__traceback__"):
            _SPARE.__traceback__ = None
        return _SPARE


class Timeout(SMTPError):
    """A stage of the dialogue did not finish within its time limit."""

    transient = True
