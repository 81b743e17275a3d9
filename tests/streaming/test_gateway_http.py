"""The gateway's HTTP side and TLS: methods, the /metrics token, ``wss://`` with a test CA."""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from gateway_support import next_message, open_ws, read_until_closed
from support import ServerProcess, free_port, python_module

from sonolake.settings import BadSettings, get_settings
from streaming.gateway.protocol import CLOSE_NORMAL

pytestmark = pytest.mark.integration


def _request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"])
@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/", "/v1/listen"])
def test_methods_other_than_get_and_head_get_405(
    gateway_module: Any, method: str, path: str
) -> None:
    status, headers, body = _request(gateway_module.port, method, path)
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert b"use GET or HEAD" in body


def test_head_answers_like_get_without_a_body(gateway_module: Any) -> None:
    status, headers, body = _request(gateway_module.port, "HEAD", "/healthz")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_metrics_can_require_a_token(make_gateway: Any) -> None:
    gateway = make_gateway(metrics_token="scrape-me")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Token scrape-me"}):
        status, answer, _ = _request(gateway.port, "GET", "/metrics", headers)
        assert status == 401 and answer["WWW-Authenticate"].startswith("Bearer")
    status, _, body = _request(
        gateway.port, "GET", "/metrics", {"Authorization": "Bearer scrape-me"}
    )
    assert status == 200 and b"sonolake_gateway_sessions" in body
    assert _request(gateway.port, "GET", "/healthz")[0] == 200, "health stays open"


def test_tls_files_are_checked_up_front(tmp_path: Path) -> None:
    with pytest.raises(BadSettings) as caught:
        get_settings(gateway_certfile=tmp_path / "missing.pem")
    assert "SONOLAKE_GATEWAY_CERTFILE" in str(caught.value) or "gateway_certfile" in str(
        caught.value
    )
    with pytest.raises(BadSettings):
        get_settings(gateway_keyfile=tmp_path / "missing.pem")


def test_the_gateway_serves_wss_with_certfile_and_keyfile(tmp_path: Path) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.cert_chain_pems[0].write_to_path(certfile)
    for pem in certificate.cert_chain_pems[1:]:
        pem.write_to_path(certfile, append=True)
    certificate.private_key_pem.write_to_path(keyfile)
    port = free_port()
    args = ["gateway", "--port", str(port), "--certfile", str(certfile), "--keyfile", str(keyfile)]
    env = {
        "SONOLAKE_STATE_DIR": str(tmp_path / "state"),
        "SONOLAKE_GATEWAY_SERVE_MODEL": "false",
        "SONOLAKE_AUTH_TOKENS": "tls-token",
    }
    client = ssl.create_default_context()
    authority.configure_trust(client)
    with ServerProcess(
        python_module("sonolake", *args), port, env=env, log_path=tmp_path / "gateway.log"
    ):
        url = f"wss://127.0.0.1:{port}/v1/listen?device_id=d&token=tls-token"
        with open_ws(url, ssl=client) as ws:
            assert next_message(ws)["type"] == "Metadata"
            ws.send(b"\x00\x00" * 1600)
            ws.send(json.dumps({"type": "CloseStream"}))
            transcript = read_until_closed(ws)
        assert transcript.close_code == CLOSE_NORMAL and transcript.max_ack == 0
        https = http.client.HTTPSConnection("127.0.0.1", port, context=client, timeout=10)
        https.request("GET", "/healthz")
        assert json.loads(https.getresponse().read())["status"] == "ok"
        https.close()
        with pytest.raises(ssl.SSLCertVerificationError):  # a client that does not trust it
            open_ws(url, ssl=ssl.create_default_context())
