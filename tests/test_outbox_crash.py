"""Outbox crash safety: SIGKILL the MicroPython process at random moments while it
writes and sends alerts; a fresh process then sends the rest.

Every alert whose put() returned arrives. A copy arrives twice only when the process
died between the server's 250 and the removal of the file, and then both copies carry
the same Message-ID. No delivered message is corrupt and no outbox file is left over.
"""

import email
import email.policy
import os
import random
import signal
import subprocess
import time

import unix_port

HARNESS = unix_port.REPO_DIR / "tests" / "alerts_crash_harness.py"
KILLS = 12


def start(micropython, outbox, prefix, count, server, certs, *options):
    environment = dict(os.environ, MICROPYPATH=".frozen:" + str(unix_port.FIRMWARE_DIR))
    return subprocess.Popen(
        [
            micropython,
            "-X",
            "heapsize=512K",
            str(HARNESS),
            str(outbox),
            prefix,
            str(count),
            str(server.port),
            str(certs.ca_der_path),
            *options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=environment,
        text=True,
    )


def test_outbox_survives_random_kills(micropython, tmp_path, smtp_server, certs):
    server = smtp_server("starttls")
    outbox = tmp_path / "outbox"
    rng = random.Random(20260101)
    written = []
    outputs = []
    for run in range(KILLS):
        process = start(micropython, outbox, "run%d" % run, 6, server, certs)
        time.sleep(rng.uniform(0.05, 1.2))
        process.send_signal(signal.SIGKILL)
        output = process.communicate(timeout=30)[0]
        outputs.append(output)
        written += [line.split()[1] for line in output.splitlines() if line.startswith("written ")]
    final = start(micropython, outbox, "final", 0, server, certs)
    output = final.communicate(timeout=120)[0]
    assert final.returncode == 0, output
    assert output.strip().endswith("done"), output

    copies = {}
    for message in server.messages:
        parsed = email.message_from_bytes(message.content, policy=email.policy.default)
        subject = str(parsed["Subject"])
        body = parsed.get_body(("plain",)).get_content()
        rule = subject.split("ALERT ", 1)[1].split(":", 1)[0]
        assert subject.startswith("[crash-board] ALERT run"), subject
        assert "Device: crash-board" in body, body
        assert "Rule: %s" % rule in body, body
        copies.setdefault(rule, []).append(str(parsed["Message-ID"]))

    assert written, "no alert was written before the kills: %s" % outputs
    for name in written:
        assert name in copies, "alert %s was written but never delivered" % name
    for name, message_ids in copies.items():
        assert len(set(message_ids)) == 1, "copies of %s carry different Message-IDs: %s" % (name, message_ids)
    leftovers = sorted(path.name for path in outbox.iterdir() if path.name not in ("aside", "state.json"))
    assert leftovers == [], leftovers
    assert list((outbox / "aside").iterdir()) == []


def test_kill_after_final_dot_sends_duplicate_with_same_id(micropython, tmp_path, smtp_server, certs):
    server = smtp_server("starttls")
    outbox = tmp_path / "outbox"
    process = start(micropython, outbox, "dot", 1, server, certs, "stall-after-dot")
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("stalled after the final dot and the 250: <-- 250"):
                break
        # The server has the message; the board has not removed its outbox entry.
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate(timeout=30)
    assert lines and lines[-1].startswith("stalled after the final dot"), "".join(lines)
    assert len(server.messages) == 1
    assert sorted(path.name for path in outbox.iterdir() if path.name != "aside") == ["00000001.json"]

    final = start(micropython, outbox, "final", 0, server, certs)
    output = final.communicate(timeout=120)[0]
    assert final.returncode == 0, output
    messages = server.wait_for_messages(2)
    assert len(messages) == 2
    first, second = (email.message_from_bytes(message.content, policy=email.policy.default) for message in messages)
    # The README's documented duplicate: both copies carry the same Message-ID.
    assert first["Message-ID"] == second["Message-ID"]
    assert "ALERT dot-0" in str(first["Subject"])
    assert first.get_body(("plain",)).get_content() == second.get_body(("plain",)).get_content()
    leftovers = sorted(path.name for path in outbox.iterdir() if path.name not in ("aside", "state.json"))
    assert leftovers == [], leftovers
