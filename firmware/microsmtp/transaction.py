"""One mail transaction: envelope, content source and outcome, plus the content encoders.

A ``Transaction`` is what ``Session.mail()`` returns. The session fills in the server's
replies as they arrive. Once ``done`` is True, either ``error`` is set, or ``reply`` is
the final 250 and ``accepted`` lists the recipients that will get the message. In every
outcome ``accepted`` names only recipients whose content the server took with a final
250, so it is empty when the content failed, unless an earlier batch after a 452 "too
many recipients" already has the message.
"""

from .errors import InvalidInputError

# The error for octets above 127 that MAIL did not declare, raised by Session.mail() for
# content given whole and by DataEncoder for content produced lazily.
EIGHT_BIT_WITHOUT_8BITMIME = (
    "message content has octets above 127 and the server does not offer 8BITMIME; "
    "encode the body as quoted-printable or base64"
)


def normalise_line_ends(chunk):
    # Content that already has CRLF line ends only is returned as it is: equal counts
    # of CRLF, CR and LF mean that every CR and LF is part of a CRLF. Counting
    # allocates nothing, while each replace() copies the chunk.
    crlf = chunk.count(b"\r\n")
    if crlf == chunk.count(b"\r") and crlf == chunk.count(b"\n"):
        return chunk
    return chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


class DataEncoder:
    """Convert message content to its wire form, one chunk at a time.

    Every bare CR or LF becomes CRLF, and NUL raises InvalidInputError, as does an octet
    above 127 when ``eight_bit`` is False (MAIL declared no BODY=8BITMIME). With
    ``dot_stuff`` (DATA), a line starting with "." gets a second "." (RFC 5321 section
    4.5.2), so no byte sequence in the content can end the DATA early or smuggle a
    second message. BDAT (RFC 3030) sends octet counts and needs no stuffing.
    """

    def __init__(self, dot_stuff=True, eight_bit=True):
        self.dot_stuff = dot_stuff
        # False when MAIL carried no BODY=8BITMIME: an octet above 127 is then an error.
        self.eight_bit = eight_bit
        self.line_start = True
        self._pending_cr = False
        self.size = 0

    def encode(self, chunk):
        if not isinstance(chunk, (bytes, bytearray)):
            raise InvalidInputError("message content must be bytes, not %s" % type(chunk).__name__)
        if b"\0" in chunk:
            raise InvalidInputError("message content contains a NUL byte")
        if not self.eight_bit and chunk and max(chunk) > 127:
            raise InvalidInputError(EIGHT_BIT_WITHOUT_8BITMIME)
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            # The LF that would complete this CRLF may start the next chunk.
            self._pending_cr = True
            chunk = chunk[:-1]
        if not chunk:
            return b""
        chunk = normalise_line_ends(chunk)
        if self.dot_stuff:
            chunk = chunk.replace(b"\r\n.", b"\r\n..")
            if self.line_start and chunk.startswith(b"."):
                chunk = b"." + chunk
        self.line_start = chunk.endswith(b"\n")
        self.size += len(chunk)
        return chunk

    def flush(self):
        """Return what completes the content: a CRLF unless it already ends with one."""
        tail = b""
        if self._pending_cr or not self.line_start:
            tail = b"\r\n"
        self._pending_cr = False
        self.line_start = True
        self.size += len(tail)
        return tail

    def finish(self):
        """Return the bytes that end DATA content: ``flush()`` and then ".\\r\\n"."""
        return self.flush() + b".\r\n"


class Transaction:
    """Envelope, content and outcome of one message.

    ``accepted`` maps each recipient that will get the message to its RCPT reply. A
    recipient enters it only once the server gave the final 250 to the content sent to
    it. ``refused`` maps each recipient that will not get it to the reply that refused
    it (RCPT, or the content's reply for a later batch after a 452). ``rcpt_accepted``
    maps each recipient the server accepted at RCPT to that reply, whatever happened to
    the content next. It helps to diagnose a failure and promises no delivery. ``reply``
    is the final reply to the content; ``message_id`` is set for a Message; ``error`` is
    the SMTPError that ended the transaction, if any. ``content`` must be re-readable
    (bytes, a list, or an object with ``chunks()``) for the rest of the recipients to
    be sent in a second transaction after a 452 "too many recipients".
    """

    # True when MAIL carries BODY=8BITMIME: for content given whole with octets above 127,
    # and for lazy content whose octets are not known (see Session.mail()) while the
    # server offers 8BITMIME.
    eight_bit = False

    def __init__(self, sender, recipients, content, size=None, smtputf8=False):
        self.sender = sender
        self.recipients = recipients
        self.content = content
        self.size = size
        self.smtputf8 = smtputf8
        self.accepted = {}
        self.refused = {}
        self.rcpt_accepted = {}
        self.deferred = []
        self.reply = None
        self.error = None
        self.done = False
        self.message_id = None
        # Wire state: the recipients of the current attempt, and whether the server
        # holds a MAIL FROM that must be reset before the next transaction.
        self.batch = recipients
        self.batch_accepted = []
        self.batch_replies = 0
        self.mail_accepted = False

    def __repr__(self):
        return "Transaction(%d accepted, %d refused, %s)" % (len(self.accepted), len(self.refused), repr(self.reply))

    @property
    def ok(self):
        return self.done and self.error is None

    def fail(self, error):
        if self.error is None:
            self.error = error
