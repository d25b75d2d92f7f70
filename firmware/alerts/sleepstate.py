"""State kept across deep sleep: RTC memory when the port has it and the data fits,
otherwise a small file written with write-temp-then-rename."""

import json

PATH = "sleep_state.json"


def _rtc_memory():
    try:
        import machine

        rtc = machine.RTC()
        rtc.memory()
        return rtc
    except (ImportError, AttributeError, OSError, TypeError):
        return None


def save(data, path=PATH):
    text = json.dumps(data)
    rtc = _rtc_memory()
    if rtc is not None:
        try:
            # ESP32 RTC memory holds 2 KB; larger state goes to the file.
            rtc.memory(text.encode())
            return "rtc"
        except (ValueError, OSError):
            rtc.memory(b"")
    from .outbox import write_atomic

    write_atomic(path, text)
    return "file"


def clear(path=PATH):
    """Remove a saved state, which a board keeps after deep sleep was turned off."""
    rtc = _rtc_memory()
    if rtc is not None and rtc.memory():
        rtc.memory(b"")
    import os

    try:
        os.remove(path)
    except OSError:
        # Not there, the usual case: nothing was written.
        pass


def load(path=PATH):
    """Return the saved dict, or {} after a power-on or if nothing valid was saved."""
    rtc = _rtc_memory()
    texts = []
    if rtc is not None:
        texts.append(rtc.memory())
    try:
        with open(path) as file:
            texts.append(file.read())
    except OSError:
        pass
    from .outbox import parse_json

    for text in texts:
        if not text:
            continue
        try:
            data = parse_json(text)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return {}
