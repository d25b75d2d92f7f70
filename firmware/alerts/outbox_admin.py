"""Outbox operations the sensor loop never calls: start-up recovery, dating entries after
NTP, setting entries aside and reporting them.

Outbox's methods of the same names import this module when they run, so its code is on
the heap only at boot and while sending (alerts.app unloads it with the delivery
modules).
"""

import os

from .outbox import _STATE, OutboxError, _exists, _is_entry, _join, _listdir, _read_json, write_atomic

_DIR_MODE = 0x4000  # S_IFDIR in os.stat()[0]


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
            if name.endswith(".tmp"):
                _recover_temporary(path)
            elif name.endswith(".json") and name != _STATE and not _is_entry(_read_json(path)):
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
            entry = _read_json(path)
            if not _is_entry(entry) or not change(entry):
                continue
            try:
                write_atomic(path, entry)
            except OSError as exc:
                raise OutboxError("cannot rewrite %s in the outbox (%s); the flash may be full" % (name, exc)) from None
            count += 1
    return count


def set_aside(outbox, name, entry, reply):
    """Move an entry the server rejected for good to aside/, with the server's reply."""
    entry["reply"] = reply[:300]
    existing = outbox.aside()
    while len(existing) >= outbox.max_aside:
        os.remove(_join(outbox.aside_directory, existing.pop(0)))
        outbox.dropped += 1
        outbox._save_state()
    write_atomic(_join(outbox.aside_directory, name), entry)
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
