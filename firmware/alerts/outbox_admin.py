"""Outbox operations the sensor loop never calls: start-up recovery, dating entries after
NTP, setting entries aside and reporting them.

Outbox's methods of the same names import this module when they run, so its code is on
the heap only at boot and while sending (alerts.app unloads it with the delivery
modules).
"""

import os

from .outbox import _STATE, OutboxError, _exists, _is_entry, _join, _listdir, _read_json, is_entry_name, write_atomic

_DIR_MODE = 0x4000  # S_IFDIR in os.stat()[0]
_ENOSPC = 28
# Seconds an entry waits when it could neither be set aside nor rescheduled on flash,
# at most outbox.retry_max_s: Outbox.wait() takes a longer wait for a clock gone back.
_HOLD_S = 600


def write_problem(exc):
    """Return what a failed write means and what to do, for the log."""
    if exc.args and exc.args[0] == _ENOSPC:
        return "flash full (%s): delete files from the board or lower outbox.max_entries" % exc
    return "flash write failed (%s): check the filesystem" % exc


def write_error(outbox, what, exc):
    """Log a failed flash write once, until a write succeeds again."""
    if outbox.write_failed:
        return
    outbox.write_failed = True
    from . import log

    log.error("outbox: %s; %s" % (write_problem(exc), what))


def _store(outbox, name, entry):
    """Write a changed entry, or keep it in memory for Outbox.load() if the flash cannot take it; True if written."""
    try:
        write_atomic(_join(outbox.directory, name), entry)
    except OSError:
        outbox._next[name] = entry
        return False
    outbox._next.pop(name, None)
    return True


def hand_on(outbox, names, gate):
    """Give the back-off time gate to the first entry of names without "own"; return 0, or gate if none has it."""
    for name in names:
        entry = outbox.load(name)
        if entry is None or entry.get("own"):
            continue
        if entry.get("next", 0) < gate:
            entry["next"] = gate
            _store(outbox, name, entry)
        return 0
    return gate


def write_held(outbox):
    """Try to write the entries kept in memory again, now that a write worked."""
    for name in list(outbox._next):
        if _exists(_join(outbox.directory, name)):
            if not _store(outbox, name, outbox._next[name]):
                return
        else:
            outbox._next.pop(name, None)


def first_entry(outbox, names):
    """Return the oldest readable entry of names; drop the unreadable ones before it.

    An entry file that exists but contains no entry (flash damage) is removed once and
    counted as dropped, so it is reported, not tried again in every round.
    """
    for name in names:
        entry = outbox.load(name)
        if entry is not None:
            return entry
        if _exists(_join(outbox.directory, name)):
            from . import log

            log.error("outbox: %s is unreadable; removed and counted as dropped" % name)
            outbox.remove(name)
            outbox.dropped += 1
            outbox._save_state()
    return None


def _is_dir(path):
    try:
        return os.stat(path)[0] & _DIR_MODE != 0
    except OSError:
        return False


def _makedirs(path):
    built = ""
    for part in path.split("/"):
        built = built + "/" + part if built or path.startswith("/") else part
        if part and not _is_dir(built):
            os.mkdir(built)


def recover(outbox):
    """Create the directories, finish or discard interrupted writes, load the drop count.

    Returns the number of entries that were found unreadable and removed.
    """
    try:
        _makedirs(outbox.aside_directory)
    except OSError as exc:
        raise OutboxError(
            "cannot create the outbox directory %s (%s); check the filesystem" % (outbox.directory, exc)
        ) from None
    removed = 0
    for directory in (outbox.directory, outbox.aside_directory):
        for name in _listdir(directory):
            path = _join(directory, name)
            # Only names the outbox writes: other files in the folder are not its own.
            if name.endswith(".tmp") and (is_entry_name(name[:-4]) or path == outbox.state_path + ".tmp"):
                _recover_temporary(path)
            elif is_entry_name(name) and not _is_entry(_read_json(path)):
                # Rename makes this unreachable, short of flash corruption.
                os.remove(path)
                removed += 1
    state = _read_json(outbox.state_path) or {}
    outbox.dropped = state.get("dropped", 0) + removed
    if removed:
        outbox._save_state()
    return removed


def _recover_temporary(temporary):
    final = temporary[:-4]
    data = _read_json(temporary)
    complete = data is not None and (_is_entry(data) or final.endswith(_STATE))
    if complete and not _exists(final):
        # The write finished but the rename did not: the file is the newest version.
        os.rename(temporary, final)
    else:
        os.remove(temporary)


def rewrite(outbox, change):
    """Call change(entry) for each pending and set-aside entry; store those it returns True for.

    Returns the number of entries rewritten. Used to date alerts queued before NTP.
    """
    count = 0
    for directory, names in ((outbox.directory, outbox.pending()), (outbox.aside_directory, outbox.aside())):
        for name in names:
            path = _join(directory, name)
            # A changed entry that could not be written is in memory (Outbox.load()).
            entry = outbox.load(name) if directory == outbox.directory else _read_json(path)
            if not _is_entry(entry) or not change(entry):
                continue
            if name in outbox._next:
                # Changed in memory too, in case the write below fails.
                outbox._next[name] = entry
            try:
                write_atomic(path, entry)
            except OSError as exc:
                raise OutboxError("cannot rewrite %s in the outbox (%s); the flash may be full" % (name, exc)) from None
            if directory == outbox.directory:
                outbox._next.pop(name, None)
            count += 1
    return count


def set_aside(outbox, name, entry, reply):
    """Move an entry the server rejected for good to aside/, with the server's reply.

    When the flash cannot take the copy with the reply, the entry file is moved as it
    is (the reply goes to the log). If even that fails, it stays pending and waits
    before its next attempt; nothing here raises for a write error.
    """
    reply = reply[:300]
    existing = outbox.aside()
    while len(existing) >= outbox.max_aside:
        try:
            os.remove(_join(outbox.aside_directory, existing.pop(0)))
        except OSError:
            continue
        outbox.dropped += 1
        outbox._save_state()
    aside = dict(entry)
    aside["reply"] = reply
    aside.pop("own", None)
    try:
        write_atomic(_join(outbox.aside_directory, name), aside)
    except OSError as exc:
        try:
            os.rename(_join(outbox.directory, name), _join(outbox.aside_directory, name))
        except OSError:
            from . import clock

            # Not tried again in every round: it waits like after a failed attempt of
            # its own, so the others still go. The wait is at most retry_max, which
            # Outbox.wait() would take for a clock gone back, and call due at once.
            hold = _HOLD_S
            if outbox.retry_max is not None and outbox.retry_max < hold:
                hold = outbox.retry_max
            entry["next"] = clock.now() + hold
            entry["own"] = True
            outbox._next[name] = entry
            write_error(outbox, "%s stays pending (server reply: %s)" % (name, reply), exc)
            return
        outbox._next.pop(name, None)
        write_error(outbox, "%s set aside without the server's reply (%s)" % (name, reply), exc)
        return
    outbox.write_failed = False
    outbox.remove(name)


def report(outbox):
    """Return what the next email must report: (aside names, aside entries, dropped count)."""
    names = outbox.aside()
    entries = []
    for name in names:
        entry = _read_json(_join(outbox.aside_directory, name))
        if entry is not None:
            entries.append(entry)
    return names, entries, outbox.dropped


def reported(outbox, report):
    """Forget what report() returned, once an email carrying it was accepted."""
    names, _, dropped = report
    for name in names:
        try:
            os.remove(_join(outbox.aside_directory, name))
        except OSError:
            pass
    if dropped:
        outbox.dropped = max(0, outbox.dropped - dropped)
        outbox._save_state()
