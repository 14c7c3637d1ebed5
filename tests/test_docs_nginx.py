"""The nginx blocks of docs/operations.md work: `nginx -t` accepts each, and a real nginx
running each one passes events over https to a real relay with the client's address and
scheme, and bounds the body size.

Each ```nginx block is a file for nginx's `http {}` context. It is written into a minimal
nginx.conf with only what the test must change rewritten: every `listen` moves to a free
loopback port, every IPv4 address:port (`proxy_pass`, `upstream` servers) becomes the test's
relay, the certificate paths a self-signed pair made by openssl, `root` a temporary
directory. Needs `nginx` and `openssl` (.ci/run installs nginx); skipped without them, which
CI counts as a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.docs_support import Block, blocks
from tests.support import ROOT, RelayProcess, free_port, missing, wait_for, write_config
from tests.test_api_http import stored

OPERATIONS = ROOT / "docs" / "operations.md"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)
OPENSSL = shutil.which("openssl")
CLIENT_ADDRESS = "127.0.0.5"  # the test's client; nginx itself reaches the relay from 127.0.0.1
ORIGIN = "https://acme.example"  # write_config's allowed origin of Space acme
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"

@pytest.fixture(scope="module")
def nginx_and_openssl() -> None:
    if NGINX is None or OPENSSL is None:
        missing("needs nginx and openssl (apt-get install nginx openssl)")


def nginx_blocks() -> list[Block]:
    return [b for b in blocks(OPERATIONS) if b.language == "nginx"]


def test_operations_md_shows_the_three_nginx_setups() -> None:
    found = nginx_blocks()
    assert len(found) == 3
    for block in found:
        for directive in (
            "ssl_certificate", "ssl_certificate_key", "client_header_timeout",
            "client_body_timeout", "large_client_header_buffers", "client_max_body_size",
            "limit_conn_zone", "limit_conn", "proxy_read_timeout", "proxy_connect_timeout",
            "proxy_send_timeout", "X-Forwarded-For", "X-Forwarded-Proto", "proxy_set_header Host",
        ):
            assert directive in block.text, f"{block.where} lacks {directive}"
    assert "upstream " in found[2].text


@pytest.fixture(scope="module")
def certificate(
    nginx_and_openssl: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [str(OPENSSL), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=shop.example", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def rewrite(text: str, relay_port: int, cert: Path, key: Path, www: Path) -> tuple[str, dict[str, int]]:
    """The block with what the test must change changed; and original port -> free port."""
    text = re.sub(r"\b(?:\d{1,3}\.){3}\d{1,3}:\d+\b", f"127.0.0.1:{relay_port}", text)
    ports: dict[str, int] = {}

    def listen(match: re.Match[str]) -> str:
        port = ports.setdefault(match[1], free_port())
        return f"listen 127.0.0.1:{port}{match[2]};"

    text = re.sub(r"listen\s+(\d+)([^;]*);", listen, text)
    text = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};", text)
    text = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};", text)
    text = re.sub(r"root\s+\S+;", f"root {www};", text)
    code = re.sub(r"#.*", "", text)
    left = re.findall(r"(?<![\w$])/(?:etc|var|usr|run|srv|opt|home)/\S*", code)
    assert not left, f"paths the test does not rewrite: {left}"
    return text, ports


def nginx_conf(prefix: Path, block: str) -> Path:
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers may read the test's files
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\n"
        "events { worker_connections 128; }\n"
        "http {\n"
        f"    access_log {prefix / 'access.log'};\n"
        f"{temp}\n"
        f"{block}\n"
        "}\n"
    )
    return conf


def nginx_command(prefix: Path, conf: Path, *more: str) -> list[str]:
    assert NGINX is not None
    return [
        NGINX, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log"),
        "-g", f"daemon off; pid {prefix / 'nginx.pid'};", *more,
    ]


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def nginx_in_front(
    request: pytest.FixtureRequest, tmp_path: Path, certificate: tuple[Path, Path]
) -> Iterator[tuple[str, RelayProcess]]:
    """A relay, and a real nginx running one documented block in front of it: the https
    base URL and the relay."""
    block: Block = request.param
    prefix = tmp_path / "nginx"
    (prefix / "www").mkdir(parents=True)
    with RelayProcess(write_config(tmp_path)) as relay:
        text, ports = rewrite(block.text, relay.port, *certificate, prefix / "www")
        conf = nginx_conf(prefix, text)
        checked = subprocess.run(
            nginx_command(prefix, conf, "-t"), check=False, capture_output=True, text=True, timeout=30
        )
        assert checked.returncode == 0, f"{block.where}: nginx -t refuses it:\n{checked.stderr}\n{text}"
        assert "test is successful" in checked.stderr
        with open(prefix / "nginx.out", "wb") as log:
            nginx = subprocess.Popen(nginx_command(prefix, conf), stdout=log, stderr=subprocess.STDOUT)
        try:
            https = ports["443"]
            wait_for(lambda: nginx.poll() is not None or accepts(https), 15, "nginx to listen")
            assert nginx.poll() is None, (prefix / "nginx.out").read_text() + (prefix / "error.log").read_text()
            yield f"https://127.0.0.1:{https}", relay
        finally:
            nginx.send_signal(signal.SIGQUIT)  # a graceful stop
            try:
                nginx.wait(15)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait(5)


@pytest.mark.parametrize("nginx_in_front", nginx_blocks(), ids=lambda b: b.where, indirect=True)
def test_events_pass_through_the_documented_nginx(nginx_in_front: tuple[str, RelayProcess]) -> None:
    base, relay = nginx_in_front
    transport = httpx.HTTPTransport(local_address=CLIENT_ADDRESS, verify=False)
    with httpx.Client(transport=transport, base_url=base, timeout=10) as client:
        api = {"event_name": "purchase", "email": "j@shop.example", "amount": 49, "idempotency_key": "nginx-api-1"}
        r = client.post("/public-api/v1/events/track", json=api, headers={"Authorization": "Bearer key-acme-write"})
        assert r.status_code == 202, r.text
        assert r.headers["idempotency-key"] == "nginx-api-1"
        assert stored(relay, "nginx-api-1") == [api]

        event = {"event_name": "view_content", "event_id": "nginx-browser-1", "fingerprint": "fp-1", "url": f"{ORIGIN}/"}
        r = client.post(
            "/e?k=pk_acme",
            content=json.dumps({"e": [event]}),
            headers={"Origin": ORIGIN, "Content-Type": "text/plain", "User-Agent": CHROME},
        )
        assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
        (kept,) = stored(relay, "nginx-browser-1")
        assert kept["ip"] == CLIENT_ADDRESS  # X-Forwarded-For passed, from a trusted proxy
        assert "Secure" in r.headers["set-cookie"]  # X-Forwarded-Proto: https
        assert kept["user_agent"] == CHROME

        assert client.get("/comet.js").status_code == 200
        too_big = client.post(
            "/public-api/v1/events/track", content=b"x" * 70_000, headers={"Authorization": "Bearer key-acme-write"}
        )
        assert too_big.status_code == 413  # client_max_body_size, answered by nginx
        assert "nginx" in too_big.text
