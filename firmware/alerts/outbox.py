"""Durable outbox: alerts on flash until the server accepted them.

Each pending alert is a small JSON file ``NNNNNNNN.json`` (zero-padded sequence number,
so names sort in queue order) holding the alert record, its Message-ID and the number
of attempts. Files are written to ``NAME.tmp`` first and then renamed over the final
name; rename is atomic on LittleFS and POSIX, so after a power loss a file is either
absent, the old version or the new one, never half written. ``recover()`` finishes or
discards what a power loss left behind.

Set-aside entries (permanent failures, kept with the server's reply) live in
``aside/``; ``state.json`` counts entries dropped because the outbox was full. Both are
reported in the next email that is sent.

The outbox reads, and removes, only files with the names it writes itself (entries,
their ``.tmp`` copies and ``state.json``), so a folder that also contains other files
loses none of them. A write that fails (the flash is full) never raises out of
retry_later(), set_aside(), reported() or the drop count: it is logged once with what
to do, the entry stays on flash as it was, and the changed entry (attempt count, next
attempt time, deferrals) is kept in memory instead, where load() finds it, until a
write of it succeeds.
"""

import json
import os
import sys

from .clock import is_set

_STATE = "state.json"
_ASIDE = "aside"
# MicroPython before 1.26 accepts text whose last closing } or ] is missing, so a file
# cut off after a complete value would read as a shorter valid one.
_LAX_JSON = sys.implementation.name == "micropython" and sys.implementation.version < (1, 26)


class OutboxError(Exception):
    """The outbox directory cannot be read or written (flash full, read-only, missing)."""


def backoff(attempts, base, cap, fraction):
    """Return the delay before retry number ``attempts`` (1 for the first retry).

    The delay doubles with each attempt from ``base`` up to ``cap`` seconds, and
    ``fraction`` (0 to 1, random) picks a point in its upper half ("equal jitter"), so
    boards that lost the same server do not all retry at the same moment.
    """
    if attempts < 1:
        attempts = 1
    delay = base
    for _ in range(attempts - 1):
        delay *= 2
        if delay >= cap:
            break
    if delay > cap:
        delay = cap
    return delay / 2 + delay / 2 * fraction


def random_fraction():
    import random

    try:
        return random.random()
    except AttributeError:  # ports built without the extra random functions
        return random.getrandbits(16) / 65536


def _random_hex(size):
    import binascii

    try:
        data = os.urandom(size)
    except (AttributeError, OSError):
        import random

        data = bytes([random.getrandbits(8) for _ in range(size)])
    return binascii.hexlify(data).decode()


def _join(directory, name):
    return directory + "/" + name


def is_entry_name(name):
    """Return True for a name put() gives an entry: a sequence number of 8 or more digits, then .json."""
    if len(name) <= 12 or not name.endswith(".json"):
        return False
    # ASCII digits only: CPython's str.isdigit() also takes other scripts' digits.
    for char in name[:-5]:
        if not "0" <= char <= "9":
            return False
    return True


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _listdir(directory):
    if hasattr(os, "ilistdir"):
        return [entry[0] for entry in os.ilistdir(directory)]
    return os.listdir(directory)


def write_atomic(path, data):
    """Write data to path through path.tmp and a rename over the old file.

    data is a str, or an object that json.dump() writes piece by piece, so an entry's
    JSON text never exists whole in memory. os.rename replaces an existing file on LittleFS and POSIX. FAT (used by some
    ESP32 builds) raises instead; then the old file is removed first, and recover()
    completes the rename if power fails in between.
    """
    temporary = path + ".tmp"
    try:
        with open(temporary, "w") as file:
            if isinstance(data, str):
                file.write(data)
            else:
                json.dump(data, file)
    except OSError:
        # Free what the partial copy took (a full flash fails mid-write); the old file stays.
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise
    try:
        os.rename(temporary, path)
    except OSError:
        if not _exists(path):
            raise
        os.remove(path)
        os.rename(temporary, path)


def closes_all(text):
    """Return True if text closes every object and array it opens (strings skipped)."""
    depth = 0
    index = 0
    end = len(text)
    while index < end:
        char = text[index]
        if char == '"':
            # Jump to the closing quote: one not escaped by an odd number of backslashes.
            while True:
                index = text.find('"', index + 1)
                if index < 0:
                    return False
                before = index - 1
                while text[before] == "\\":
                    before -= 1
                if (index - before) % 2:
                    break
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        index += 1
    return depth == 0


def parse_json(text):
    """Return the JSON value in text; raise ValueError for invalid or cut-off text on every runtime."""
    if _LAX_JSON and not closes_all(text):
        raise ValueError("JSON text ends before its last closing bracket")
    return json.loads(text)


def _read_json(path):
    """Return the parsed JSON object in path, or None if it is missing or not valid."""
    try:
        with open(path) as file:
            if _LAX_JSON:
                data = parse_json(file.read())
            else:
                # json.load() parses from the stream, without a copy of the whole text.
                data = json.load(file)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_entry(data):
    return data is not None and "alert" in data and "id" in data and "seq" in data


class Outbox:
    """The queue of alerts in ``directory``; see the module docstring for the layout.

    ``max_entries`` bounds the pending alerts: the oldest is dropped and counted. The
    entry in ``in_flight`` is never dropped, so no drop is counted for an alert that
    the server then accepts, and the outbox may contain max_entries + 1 meanwhile.
    ``max_aside`` bounds the set-aside ones. ``domain`` is the right side of new Message-IDs.
    ``retry_max`` is the longest retry delay (outbox.retry_max_s); see wait().
    """

    def __init__(self, directory, max_entries=50, max_aside=10, domain="localhost", retry_max=None):
        self.directory = directory.rstrip("/") or "/"
        self.aside_directory = _join(self.directory, _ASIDE)
        self.max_entries = max_entries
        self.max_aside = max_aside
        self.domain = domain
        # outbox.retry_max_s: no stored retry time lies further ahead, unless the clock went back.
        self.retry_max = retry_max
        self._next_seq = None
        self.dropped = 0
        # Name of the entry the sender is transmitting now; put() never drops it.
        self.in_flight = None
        self.state_path = _join(self.directory, _STATE)
        # Changed entries that could not be written to flash: name -> entry (see load()).
        self._next = {}
        # True after a write failed, until one succeeds: the problem is logged once.
        self.write_failed = False

    # -- queue --------------------------------------------------------------------------

    def pending(self):
        """Return the names of pending entries, oldest first."""
        names = [name for name in _listdir(self.directory) if is_entry_name(name)]
        names.sort()
        return names

    def aside(self):
        names = [name for name in _listdir(self.aside_directory) if is_entry_name(name)]
        names.sort()
        return names

    def _sequence(self):
        if self._next_seq is None:
            highest = 0
            for name in self.pending() + self.aside():
                try:
                    highest = max(highest, int(name[:-5]))
                except ValueError:
                    pass
            self._next_seq = highest + 1
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def put(self, alert, now=0):
        """Write an alert to flash and return its entry name; the oldest is dropped when full."""
        names = self.pending()
        if self.in_flight in names:
            names.remove(self.in_flight)
        gate = 0
        while len(names) >= self.max_entries:
            oldest = names.pop(0)
            entry = self.load(oldest)
            if entry is not None and not entry.get("own"):
                gate = max(gate, entry.get("next", 0))
            self.remove(oldest)
            self.dropped += 1
            self._save_state()
        if gate:
            # The session's back-off rode on the dropped entry (see due()). The first
            # entry left without a wait of its own carries it on, or else the new one,
            # or a full outbox would retry at every new alert.
            from .outbox_admin import hand_on

            gate = hand_on(self, names, gate)
        seq = self._sequence()
        entry = {
            "seq": seq,
            "id": "<%s.%d@%s>" % (_random_hex(8), seq, self.domain),
            "attempts": 0,
            "next": gate,
            "created": now,
            "alert": alert,
        }
        name = "%08d.json" % seq
        try:
            write_atomic(_join(self.directory, name), entry)
        except OSError as exc:
            from .outbox_admin import write_problem

            raise OutboxError("cannot write %s to the outbox: %s" % (name, write_problem(exc))) from None
        # A write worked: the next failure is logged again.
        self.write_failed = False
        if self._next:
            try:
                from .outbox_admin import write_held

                write_held(self)
            except MemoryError:
                # The entry is written: the caller must not write it again.
                pass
        return name

    def load(self, name):
        """Return the entry dict of a pending name, or None if it is gone or unreadable.

        A changed entry that could not be written (see retry_later()) comes from memory.
        """
        held = self._next.get(name)
        if held is not None:
            if _exists(_join(self.directory, name)):
                # A copy: a caller that changes it and fails to store it leaves this one as it was.
                return dict(held)
            del self._next[name]
        entry = _read_json(_join(self.directory, name))
        if not _is_entry(entry):
            return None
        return entry

    def remove(self, name):
        self._next.pop(name, None)
        try:
            os.remove(_join(self.directory, name))
        except OSError:
            # Already removed: the entry was dropped while it was being sent.
            pass

    def retry_later(self, name, entry, now, delay):
        """Count a failed attempt and store the earliest time for the next one.

        If the flash cannot take the change, the entry stays as it was on flash and the
        changed entry is kept in memory (load() returns it). The retry still waits, and
        its attempts and deferrals still count towards giving up.
        """
        entry["attempts"] = entry.get("attempts", 0) + 1
        entry["next"] = now + delay
        if _exists(_join(self.directory, name)):
            try:
                write_atomic(_join(self.directory, name), entry)
            except OSError as exc:
                self._next[name] = entry
                from .outbox_admin import write_error

                write_error(self, "the retry time of %s is kept in memory only" % name, exc)
                return
            self._next.pop(name, None)
            self.write_failed = False

    def wait(self, entry, now):
        """Return the seconds until entry may be tried again by itself (0 if it may now).

        A stored time that now cannot be compared with counts as due. That is the case
        while the clock is not set (the board restarted and NTP has not replied yet), and
        for a time more than retry_max seconds ahead (the clock went back). Waiting for
        either could last years, and the round that would set the clock never starts.
        """
        wait = entry.get("next", 0) - now
        if wait <= 0 or not is_set(now) or (self.retry_max is not None and wait > self.retry_max):
            return 0
        return wait

    def due(self, now):
        """Return the seconds until a session should start (0 if now), or None if empty.

        A failed session stores its back-off in the first entry whose wait is not its
        own (see the sender); every entry waits for it. An entry held back by a failure
        of its own message ("own" set) does not hold back the others: the session
        starts once any entry may be tried.
        """
        gate = None
        shortest = None
        for name in self.pending():
            entry = self.load(name)
            if entry is None:
                # Unreadable: dropped once and counted (outbox_admin), never retried in a loop.
                from .outbox_admin import first_entry

                entry = first_entry(self, [name])
                if entry is None:
                    continue
            wait = self.wait(entry, now)
            if gate is None and not entry.get("own"):
                gate = wait
            if shortest is None or wait < shortest:
                shortest = wait
            if gate is not None and shortest <= gate:
                # No entry after this one changes the result, so the rest are not read.
                return gate
        if shortest is None:
            return None
        return shortest if gate is None or shortest > gate else gate

    def ready(self, now):
        """Return the names of the pending entries that may be tried now, oldest first."""
        names = []
        for name in self.pending():
            entry = self.load(name)
            if entry is not None and self.wait(entry, now) == 0:
                names.append(name)
        return names

    # -- start-up, dating after NTP, permanent failures and drops (in alerts.outbox_admin) --

    def recover(self):
        """Create the directories, finish or discard interrupted writes, load the drop count.

        Returns the number of entries that were found unreadable and removed.
        """
        from .outbox_admin import recover

        return recover(self)

    def rewrite(self, change):
        """Call change(entry) for each pending and set-aside entry; store those it returns True for.

        Returns the number of entries rewritten. Used to date alerts queued before NTP.
        """
        from .outbox_admin import rewrite

        return rewrite(self, change)

    def set_aside(self, name, entry, reply):
        """Move an entry the server rejected for good to aside/, with the server's reply."""
        from .outbox_admin import set_aside

        set_aside(self, name, entry, reply)

    def report(self):
        """Return what the next email must report: (aside names, aside entries, dropped count)."""
        from .outbox_admin import report

        return report(self)

    def reported(self, report):
        """Forget what report() returned, once an email carrying it was accepted."""
        from .outbox_admin import reported

        reported(self, report)

    def _save_state(self):
        """Write the drop count; on a write error keep it in memory, to be written with the next change."""
        try:
            write_atomic(self.state_path, {"dropped": self.dropped})
        except OSError as exc:
            from .outbox_admin import write_error

            write_error(self, "the count of dropped alerts (%d) is kept in memory only" % self.dropped, exc)
            return False
        self.write_failed = False
        return True
