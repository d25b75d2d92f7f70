"""Tests of `microsmtp certs probe` and `certs build` against loopback servers."""

import importlib.util
import json
import ssl

import pytest
import trustme

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


def test_probe_connection_refused(capsys):
    status, out, err = run(["certs", "probe", "127.0.0.1:1", "--starttls"], capsys)

    assert status == 69
    assert "connecting to 127.0.0.1:1 failed" in err


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
