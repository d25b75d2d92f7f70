"""Tests of `microsmtp certs probe` and `certs build` against loopback servers."""

import importlib.util
import json
import re
import ssl

import pytest
import trustme
from raw_server import RawServer

import unix_port
from microsmtp_tools import certs, cli


def run(argv, capsys):
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def root_line(out):
    lines = [line for line in out.splitlines() if line.startswith("root the board needs: ")]
    assert lines, out
    return lines[0]


def pem_blocks(text):
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", text, flags=re.DOTALL)


def load_module(path):
    spec = importlib.util.spec_from_file_location("ca_roots_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_starttls_finds_test_root(certs, smtp_server, tmp_path, capsys):
    server = smtp_server("starttls")
    saved = tmp_path / "probe.json"
    argv = ["certs", "probe", "127.0.0.1:%d" % server.port, "--starttls", "--server-name", "localhost"]
    argv += ["--ca-bundle", str(certs.ca_pem_path), "--save", str(saved)]

    status, out, err = run(argv, capsys)

    assert status == 0, out + err
    assert "certificate 0:" in out
    assert "O=microsmtp test CA" in root_line(out)
    assert "checked: CPython verifies the chain and the name localhost" in out
    result = json.loads(saved.read_text())
    assert ssl.PEM_cert_to_DER_cert(result["root"]) == certs.ca_der
    assert result["starttls"] is True


def test_probe_implicit_tls(certs, smtp_server, capsys):
    server = smtp_server("tls")
    argv = ["certs", "probe", "127.0.0.1:%d" % server.port, "--ca-bundle", str(certs.ca_pem_path)]

    status, out, err = run(argv, capsys)

    assert status == 0, out + err
    assert "O=microsmtp test CA" in root_line(out)


def test_probe_root_missing_from_certifi(smtp_server, capsys):
    server = smtp_server("starttls")
    argv = ["certs", "probe", "127.0.0.1:%d" % server.port, "--starttls", "--server-name", "localhost"]

    status, out, err = run(argv, capsys)

    assert status == 69, out + err
    assert "root: not found in certifi's Mozilla CA bundle" in out
    assert "O=microsmtp test CA" in out.split("issuer:", 1)[1].splitlines()[0]


def test_probe_chain_with_intermediate(certs, smtp_server, tmp_path, capsys):
    intermediate = certs.ca.create_child_ca()
    leaf = intermediate.issue_cert("localhost", "127.0.0.1", key_type=trustme.KeyType.ECDSA)
    server = smtp_server("starttls", cert=leaf)
    argv = ["certs", "probe", "127.0.0.1:%d" % server.port, "--starttls", "--ca-bundle", str(certs.ca_pem_path)]

    status, out, err = run(argv, capsys)

    assert status == 0, out + err
    # The server sends its leaf and the intermediate; the root is looked up, not sent.
    assert "certificate 1:" in out
    assert "O=microsmtp test CA" in root_line(out)


def test_probe_without_starttls_on_plaintext_port(smtp_server, capsys):
    server = smtp_server("starttls")

    status, out, err = run(["certs", "probe", "127.0.0.1:%d" % server.port, "--timeout", "5"], capsys)

    assert status in (69, 75), out + err
    assert "add --starttls" in err or "timed out" in err


@pytest.fixture
def raw_server():
    """Start RawServer(handler) servers and stop them at teardown."""
    started = []

    def start(handler):
        server = RawServer(handler)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_probe_connection_refused(closed_port, capsys):
    status, out, err = run(["certs", "probe", "127.0.0.1:%d" % closed_port, "--starttls"], capsys)

    # A refused connection may succeed later: 75 (EX_TEMPFAIL), as `microsmtp send` returns.
    assert status == 75, out + err
    assert "connecting to 127.0.0.1:%d failed" % closed_port in err


@pytest.fixture
def closed_port():
    """A loopback port that is bound but not listening, so connecting is refused."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def test_probe_greeting_timeout(raw_server, capsys):
    server = raw_server(lambda connection: connection.stall(10))

    status, out, err = run(["certs", "probe", "127.0.0.1:%d" % server.port, "--starttls", "--timeout", "0.5"], capsys)

    assert status == 75, out + err
    assert "timed out after 0.5 s" in err


@pytest.mark.parametrize("greeting, expected", [(b"421 busy, try later\r\n", 75), (b"554 no service\r\n", 69)])
def test_probe_greeting_reply_code(greeting, expected, raw_server, capsys):
    server = raw_server(lambda connection: connection.send(greeting))

    status, out, err = run(["certs", "probe", "127.0.0.1:%d" % server.port, "--starttls"], capsys)

    assert status == expected, out + err
    assert "expected 220, got: %s" % greeting.decode().strip() in err


def test_probe_invalid_options(closed_port, tmp_path, capsys):
    argv = ["certs", "probe", "127.0.0.1:%d" % closed_port, "--ca-bundle", str(tmp_path / "missing.pem")]

    status, out, err = run(argv, capsys)

    # The bundle is read before connecting, so the refused port does not matter.
    assert status == 78, out + err
    assert "reading the CA bundle %s failed" % (tmp_path / "missing.pem") in err


def test_probe_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["certs", "probe", "smtp.example.com"])

    assert exit_info.value.code == 2
    assert "give HOST:PORT" in capsys.readouterr().err


def test_probe_help_lists_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        cli.main(["certs", "probe", "--help"])

    out = " ".join(capsys.readouterr().out.split())
    assert "75 temporary failure: connection refused, reset or timed out" in out
    assert "69 permanent failure" in out
    assert "78 invalid input" in out
    assert "2 usage error" in out


def test_build_from_probe_loads_on_micropython(certs, smtp_server, tmp_path, capsys, micropython):
    server = smtp_server("starttls")
    saved = tmp_path / "probe.json"
    output = tmp_path / "ca_roots.py"
    probe = ["certs", "probe", "127.0.0.1:%d" % server.port, "--starttls", "--server-name", "localhost"]
    assert run(probe + ["--ca-bundle", str(certs.ca_pem_path), "--save", str(saved)], capsys)[0] == 0

    status, out, err = run(["certs", "build", "--probe", str(saved), "-o", str(output)], capsys)

    assert status == 0, out + err
    assert load_module(output).ROOTS == (certs.ca_der,)
    assert "heap delta when parsed: " in out
    check = "import sys; sys.path.insert(0, %r); import ca_roots, ssl\n" % str(tmp_path)
    check += "c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\nfor r in ca_roots.ROOTS: c.load_verify_locations(cadata=r)\n"
    check += "print('loaded', len(ca_roots.ROOTS))"
    process = unix_port.run_micropython(["-c", check], executable=micropython)
    assert process.stdout.strip() == "loaded 1", unix_port.format_output(process)


def test_build_all_providers_deduplicates(tmp_path, capsys):
    output = tmp_path / "ca_roots.py"
    argv = ["certs", "build", "--provider", *sorted(certs.PROVIDER_ROOTS), "-o", str(output), "--no-measure"]

    status, out, err = run(argv, capsys)

    assert status == 0, out + err
    subjects = {subject for roots in certs.PROVIDER_ROOTS.values() for subject in roots}
    roots = load_module(output).ROOTS
    assert len(roots) == len(subjects)
    assert len(set(roots)) == len(roots)
    assert out.count("DigiCert Global Root G2") == 1
    for der in roots:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=der)


def test_build_same_cert_as_pem_and_der(certs, tmp_path, capsys):
    output = tmp_path / "ca_roots.py"
    argv = ["certs", "build", "--cert", str(certs.ca_pem_path), "--cert", str(certs.ca_der_path), "-o", str(output)]

    status, out, err = run(argv + ["--no-measure"], capsys)

    assert status == 0, out + err
    assert load_module(output).ROOTS == (certs.ca_der,)
    assert "1 root(s):" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["certs", "build", "--no-measure"], "no roots given"),
        (["certs", "build", "--cert", "/nonexistent/root.pem"], "check the path given with --cert"),
    ],
)
def test_build_invalid_input(argv, message, tmp_path, capsys):
    status, out, err = run(argv + ["-o", str(tmp_path / "ca_roots.py")], capsys)

    assert status == 78
    assert message in err
    assert not (tmp_path / "ca_roots.py").exists()


def test_build_rejects_non_certificate(tmp_path, capsys):
    bogus = tmp_path / "root.pem"
    bogus.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")

    status, out, err = run(["certs", "build", "--cert", str(bogus), "-o", str(tmp_path / "x.py")], capsys)

    assert status == 78
    assert "not a PEM or DER X.509 certificate" in err


def test_build_pem_accepted_by_send(certs, smtp_server, tmp_path, monkeypatch, capsys):
    pem = tmp_path / "roots.pem"
    module = tmp_path / "ca_roots.py"
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(certs.other_ca.cert_pem.bytes())
    # The trusted test CA comes second, so send must read every block of the bundle.
    argv = ["certs", "build", "--cert", str(other_ca), "--cert", str(certs.ca_pem_path), "--pem", str(pem)]

    status, out, err = run(argv + ["--no-module", "-o", str(module), "--no-measure"], capsys)

    assert status == 0, out + err
    assert "wrote %s (PEM bundle" % pem in out
    assert not module.exists()
    blocks = pem_blocks(pem.read_text(encoding="ascii"))
    assert [ssl.PEM_cert_to_DER_cert(block) for block in blocks] == [certs.other_ca_der, certs.ca_der]
    server = smtp_server("starttls", users={"alice": "secret"})
    monkeypatch.setenv("SMTP_PASSWORD", "secret")
    send = ["send", "--host", server.host, "--port", str(server.port), "--server-name", "localhost", "--ca", str(pem)]
    send += ["--user", "alice", "--from", "alerts@example.com", "--to", "ops@example.com"]
    send += ["--subject", "PEM bundle", "--body", "ok"]

    status, out, err = run(send, capsys)

    assert status == 0, out + err
    assert len(server.messages) == 1
    assert server.messages[0].tls is True
    assert server.messages[0].user == "alice"


def test_build_pem_with_module(certs, tmp_path, capsys):
    pem = tmp_path / "pem" / "roots.pem"
    module = tmp_path / "ca_roots.py"

    status, out, err = run(
        ["certs", "build", "--cert", str(certs.ca_der_path), "-o", str(module), "--pem", str(pem), "--no-measure"],
        capsys,
    )

    assert status == 0, out + err
    assert load_module(module).ROOTS == (certs.ca_der,)
    assert [ssl.PEM_cert_to_DER_cert(block) for block in pem_blocks(pem.read_text())] == [certs.ca_der]


def test_build_no_module_needs_pem(certs, tmp_path, capsys):
    argv = ["certs", "build", "--cert", str(certs.ca_pem_path), "--no-module", "-o", str(tmp_path / "x.py")]

    status, out, err = run(argv, capsys)

    assert status == 78
    assert "--no-module writes nothing without --pem FILE" in err
