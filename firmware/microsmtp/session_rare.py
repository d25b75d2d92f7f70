"""Session code for paths that one plain alert never takes.

A multi-step AUTH exchange, a failed AUTH, a rejected EHLO and the HELO fallback, a
refused STARTTLS, BDAT, recipients deferred by a 452, unsolicited replies, a reply that
quotes a credential, a malformed reply while the session has credentials and a log
function that fails are handled here.
``session.py`` imports this module on first use, so a board that sends with AUTH PLAIN
and DATA never loads it. The functions belong to ``Session`` and use its private
state.
"""

import sys

from .errors import AuthError, ConnectionLost, ProtocolError, RecipientsRefused, SecurityError
from .session import PLAINTEXT

try:
    from micropython import const
except ImportError:
    # Every const() here wraps an int; int() returns it unchanged, and unlike a def it
    # adds no function to the module that MicroPython loads.
    const = int

# A BDAT chunk smaller than this is joined with the next one, so that small pieces
# from the message builder do not each cost a command line and a reply.
_MIN_BDAT_CHUNK = const(1024)


def ehlo_rejected(session, reply):
    """Handle an EHLO reply other than 250: fall back to HELO where that is safe."""
    if reply.transient:
        session._fatal("EHLO failed", reply)
    # HELO carries no extensions, so no STARTTLS and no AUTH: fall back only when
    # plaintext was explicitly allowed or TLS is already up.
    if session.tls_active or session.security == PLAINTEXT:
        session._command(b"HELO " + session.local_name, "helo")
        return
    session._fatal(
        "the server rejected EHLO, so it cannot offer STARTTLS; use security 'tls' on the "
        "server's implicit TLS port, or 'none' only on a trusted network",
        reply,
        SecurityError,
    )


def helo_reply(session, reply):
    """Handle the reply to the HELO sent after a rejected EHLO."""
    if reply.code != 250:
        session._fatal("HELO failed", reply)
    session.esmtp = False
    session.extensions = {}
    session._after_hello()


def starttls_refused(session, reply):
    """Raise the SecurityError for a STARTTLS reply other than 220; a 4xx is transient."""
    error = session._reply_error(
        "STARTTLS was refused, so the connection cannot be secured", reply, SecurityError, "starttls"
    )
    error.transient = reply.transient
    raise error


def auth_reply(session, reply, negotiating):
    """Handle an AUTH reply other than 235: send the response to a 334 challenge, or fail."""
    mechanism = session._mechanism
    if reply.code == 334 and negotiating:
        challenge = reply.lines[0].encode()
        if isinstance(mechanism, bytes):
            # PLAIN: a server that does not accept an initial response sends an empty 334.
            answer = None if challenge else mechanism
        else:
            answer = mechanism.respond(challenge)
        if answer is None:
            # "*" cancels the exchange (RFC 4954 section 4); the server replies 501.
            session._command(b"*", "auth")
        else:
            if answer:
                session._secrets.append(answer.decode())
            session._command(answer, "auth", None, None, "<redacted>")
        return
    what = "authentication failed"
    if reply.code == 503:
        what = "the server rejected AUTH as out of sequence (503)"
    elif reply.code == 334:
        what = "the server asked for more AUTH data after a one-step PLAIN exchange"
    status = getattr(mechanism, "error_status", None)
    if status:
        what += " (XOAUTH2 status %s)" % status
    session._fatal(what, reply, AuthError)


def send_bdat(session, transaction, chunks, encoder):
    """Queue the next BDAT chunk of the content (RFC 3030)."""
    # Collect at least _MIN_BDAT_CHUNK octets, and look one chunk ahead to know which
    # BDAT is the LAST.
    pending = b""
    last = True
    for chunk in chunks:
        pending += encoder.encode(chunk)
        if len(pending) >= _MIN_BDAT_CHUNK:
            last = False
            break
    if last:
        pending += encoder.flush()
        session._content = None
    line = b"BDAT %d%s" % (len(pending), b" LAST" if last else b"")
    session._out.append(line + b"\r\n")
    session._out.append(pending)
    session._expected.append(("message" if last else "bdat", transaction, None))
    if session._log is not None:
        session._emit("--> " + line.decode())
        session._emit("--> (%d octets)" % len(pending))


def rcpt_over_limit(transaction, rcpt, address, reply):
    """Handle a 452 to RCPT after another recipient of the batch was accepted."""
    content = transaction.content
    if isinstance(content, (bytes, bytearray, list, tuple)) or hasattr(content, "chunks"):
        # RFC 5321 section 4.5.3.1.10: "too many recipients" requests that the client
        # send the rest in a later transaction, which reads the content again. Each batch
        # gets at least one recipient accepted, so a server that always replies 452
        # cannot cause a loop.
        transaction.deferred.append(rcpt)
    else:
        transaction.refused[address] = reply


def refuse_batch(transaction, reply):
    """Record the server's refusal (reply) of a later batch after a 452.

    An earlier batch already has the message, so the transaction stays a success. Every
    recipient of this batch, and each one it deferred, will not get it, so it counts as
    refused. A recipient that RCPT refused keeps that reply. Any other gets reply, the
    refusal of MAIL, DATA or the content, which may come before its RCPT got a reply.
    """
    refused = transaction.refused
    for rcpt in transaction.batch + transaction.deferred:
        address = rcpt.decode()
        if address not in refused:
            refused[address] = reply
    transaction.deferred = []


def all_refused_error(session, transaction):
    """Return the RecipientsRefused for a transaction."""
    refused = transaction.refused
    # In the order the recipients were sent: MicroPython's dicts keep no insertion order.
    order = []
    for address in transaction.recipients:
        address = address.decode() if isinstance(address, bytes) else address
        if address in refused:
            order.append(address)
    order += [address for address in refused if address not in order]
    details = ["%s: %s" % (address, refused[address].describe()) for address in order]
    # The replies are redacted already (Session._next_reply()).
    return RecipientsRefused("every recipient was refused: %s" % "; ".join(details), refused, order=order)


def retry_deferred(session, transaction):
    """Queue a second transaction with the same content for the recipients deferred by a 452."""
    transaction.batch = transaction.deferred
    transaction.deferred = []
    transaction.batch_accepted = []
    transaction.batch_replies = 0
    session._queued = session._envelope(transaction, True) + session._queued


def fail_idle(session, reply):
    """End an idle session that received a reply to no command, or EOF when reply is None."""
    # A server may announce its shutdown (421) while the session is idle. Anything else
    # that arrives unasked means the two sides disagree about the dialogue.
    if reply is None:
        error = ConnectionLost("the server closed the connection while the session was idle", stage=session.stage)
    elif reply.code == 421:
        session._log_reply(reply)
        error = session._reply_error("the server is closing the connection", reply)
    else:
        session._log_reply(reply)
        error = ProtocolError("unexpected reply from the server while idle: %s" % reply.describe(), stage=session.stage)
    session._fail_all(error)
    raise error


def log_failed(session, exc):
    """Stop calling the log function that raised exc for the rest of the connection, and print one line about it."""
    session._log = None
    # A broken standard error stream must not end the send either.
    try:
        print(
            "microsmtp: the log function raised %s: %s; no more transcript lines for this connection"
            % (type(exc).__name__, exc),
            file=sys.stderr,
        )
    except Exception:
        pass


def unquoted(exc):
    """Return the reply parser's error exc without its quote of the malformed line.

    The session has credentials, and the line may contain the tail of one whose start was
    on an earlier line of the reply, which the parser has dropped. So no quote is safe.
    """
    message = exc.message
    # The parser ends a message that quotes the line with ": " and repr() of its bytes.
    cut = message.find(": b")
    if cut > 0:
        message = message[:cut] + " (the line is not quoted, because it could hold a piece of a credential)"
    return ProtocolError(message, stage=exc.stage)


def _match(joined, cuts, secret, at):
    # Return where secret ends when it occurs in joined at index at, else -1.
    # At a cut (the start of a line's part), the blanks of the secret are skipped,
    # because the server's wrapping removed them. Elsewhere each character must match.
    for char in secret:
        if char in " \t" and at in cuts:
            continue
        if joined[at : at + 1] != char:
            return -1
        at += 1
    return at


def scrub_reply(session, reply):
    """Redact every credential in the reply's lines, also one the server's wrapping cut.

    The lines are read as one text, without the blanks around each line break. A
    credential matches there across a break that cut it inside a word or at a blank of
    its own. Every occurrence of every credential is found on that text first and all
    are redacted together, so that redacting one (a password that also occurs in the
    base64 AUTH PLAIN line) cannot hide another. Each piece of an occurrence is redacted
    on the line that contains it, so no piece stays on either side of a cut.
    """
    lines = reply.lines
    # Per line: the offset from joined text to line index, and where its part starts and ends.
    parts = []
    cuts = []
    joined = ""
    last = len(lines) - 1
    for index, line in enumerate(lines):
        start = len(line) - len(line.lstrip(" \t")) if index else 0
        end = max(len(line.rstrip(" \t")) if index < last else len(line), start)
        if index:
            cuts.append(len(joined))
        parts.append((len(joined) - start, start, end))
        joined += line[start:end]
    spans = []
    for secret in session._secrets:
        # A secret starts with a character other than a blank (Session._after_hello()).
        found = joined.find(secret[0])
        while found >= 0:
            end = _match(joined, cuts, secret, found)
            if end > 0:
                spans.append((found, end))
            found = joined.find(secret[0], found + 1)
    if not spans:
        return
    spans.sort()
    for index, (shift, start, end) in enumerate(parts):
        line = lines[index]
        text = ""
        done = 0
        for low, high in spans:
            # The piece of this span on this line, as line indexes.
            low = max(low - shift, start, done)
            high = min(high - shift, end)
            if low < high:
                if low > done or not text:
                    text += line[done:low] + "<redacted>"
                done = high
        if text:
            lines[index] = text + line[done:]
