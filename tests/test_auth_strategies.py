"""Every authentication strategy of the shared set, each against a real loopback server that checks it.

login token, API key, Basic (a small checking app); OAuth2 client credentials by form and by Basic (the LGSP
stand-in); HMAC-signed ``XroadVnpt-*`` headers (the VXP stand-in); SOAP body token and WS-Security
UsernameToken, text and digest (the eDoc hub, behind a WS-Security checking wrapper); client TLS certificates
(a throwaway CA made with ``cryptography``, uvicorn serving TLS that requires a client certificate).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from lxml import etree
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.auth import build_auth, sign_headers
from connectors.auth_config import ClientCertificateAuth, HmacHeadersAuth, TlsConfig
from connectors.declarative.config import ApiKeyAuth, BasicAuth, LoginTokenAuth, OAuth2ClientCredentials
from connectors.soap import clear_wsdl_cache
from connectors.soap.config import WsSecurityCredentials
from gateway.errors import AuthError, ConfigError, SourceUnavailable
from gateway.http import HttpLimits, fetch, make_http_client
from gateway.standins.edoc_hub import SANDBOX_TOKEN, EdocHubState, create_edoc_hub_app
from gateway.standins.lgsp import SANDBOX_CLIENT_SECRET, LgspState, create_lgsp_app
from gateway.standins.server import RunningServer, serve_in_thread
from gateway.standins.vxp import SANDBOX_SECRET, VxpState, create_vxp_app
from tests._soap_helpers import hub_config, hub_connector

LIMITS = HttpLimits(deadline=10)


def call(client: httpx.Client, strategy: Any, path: str, **kwargs: Any) -> tuple[httpx.Response, bytes]:
    def send(method: str, url: str, **kw: Any) -> tuple[httpx.Response, bytes]:
        return fetch(client, client.build_request(method, url, **kw), limits=LIMITS)

    request = client.build_request("GET", path, **kwargs)
    strategy.apply(request, send)
    return fetch(client, request, limits=LIMITS)


# --- login token, API key, Basic ------------------------------------------------------------------------------


def _checker() -> Starlette:
    logins: list[int] = []

    async def login(request: Request) -> Response:
        body = orjson.loads(await request.body())
        if body.get("user") != "kpigw" or body.get("pass") != "s3cret":
            return Response(b'{"data": {}}', media_type="application/json")
        logins.append(1)
        return Response(orjson.dumps({"data": {"token": f"tok{len(logins)}", "ttl": 120}}),
                        media_type="application/json")  # fmt: skip

    async def data(request: Request) -> Response:
        h = request.headers
        ok = (
            h.get("X-Token", "").startswith("tok")
            or h.get("X-API-Key") == "k-123"
            or h.get("Authorization") == "Basic " + base64.b64encode(b"kpigw:s3cret").decode()
        )
        return Response(b"{}", status_code=200 if ok else 401)

    return Starlette(routes=[Route("/login", login, methods=["POST"]), Route("/data", data)])


@pytest.fixture(scope="module")
def checker() -> Iterator[RunningServer]:
    with serve_in_thread(_checker()) as server:
        yield server


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        (LoginTokenAuth(type="login_token", path="/login", username="kpigw", password=SecretStr("s3cret"),
                        username_field="user", password_field="pass", token_path="data.token",
                        expires_in_path="data.ttl", header="X-Token"),
         LoginTokenAuth(type="login_token", path="/login", username="kpigw", password=SecretStr("nope"),
                        username_field="user", password_field="pass", header="X-Token")),
        (ApiKeyAuth(type="api_key", api_key=SecretStr("k-123")), ApiKeyAuth(type="api_key", api_key=SecretStr("x"))),
        (BasicAuth(type="basic", username="kpigw", password=SecretStr("s3cret")),
         BasicAuth(type="basic", username="kpigw", password=SecretStr("wrong"))),
    ],
    ids=["login_token", "api_key", "basic"],
)  # fmt: skip
def test_header_strategies(checker: RunningServer, good: Any, bad: Any) -> None:
    with make_http_client(base_url=checker.url) as client:
        assert call(client, build_auth(good), "/data")[0].status_code == 200
        with pytest.raises(AuthError):
            call(client, build_auth(bad), "/data")


# --- OAuth2 client credentials ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lgsp() -> Iterator[tuple[LgspState, RunningServer]]:
    state = LgspState(days=2)
    with serve_in_thread(create_lgsp_app(state)) as server:
        yield state, server


@pytest.mark.parametrize("client_auth", ["form", "basic"])
def test_oauth2_client_credentials_cached_and_refreshed_early(
    lgsp: tuple[LgspState, RunningServer], client_auth: str
) -> None:
    state, server = lgsp
    now = [0.0]
    cfg = OAuth2ClientCredentials(type="oauth2_client_credentials", token_url="/token", client_id="kpigw",
                                  client_secret=SecretStr(SANDBOX_CLIENT_SECRET), client_auth=client_auth,  # type: ignore[arg-type]
                                  refresh_before=60)  # fmt: skip
    strategy = build_auth(cfg, clock=lambda: now[0])
    before = state.token_requests
    with make_http_client(base_url=server.url) as client:
        for _ in range(3):
            assert call(client, strategy, "/api/dossiers")[0].status_code == 200
        assert state.token_requests == before + 1  # cached
        now[0] = state.token_ttl - 59  # inside the refresh window: a new token before the old one expires
        call(client, strategy, "/api/dossiers")
        assert state.token_requests == before + 2
        wrong = cfg.model_copy(update={"client_secret": SecretStr("nope")})
        with pytest.raises(AuthError):
            call(client, build_auth(wrong), "/api/dossiers")


# --- HMAC-signed headers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vxp() -> Iterator[tuple[VxpState, RunningServer]]:
    state = VxpState(days=1, future_days=0)
    with serve_in_thread(create_vxp_app(state)) as server:
        yield state, server


def test_hmac_headers_are_verified_and_bad_ones_refused(vxp: tuple[VxpState, RunningServer]) -> None:
    state, server = vxp
    cfg = HmacHeadersAuth(type="hmac_headers", system_id="000.00.00.H37", secret=SecretStr(SANDBOX_SECRET),
                          signed=["messagetype"])  # fmt: skip
    with make_http_client(base_url=server.url) as client:
        response, body = call(client, build_auth(cfg), "/getReceivedEdocList", headers={"messagetype": "status"})
        assert orjson.loads(body)["status"] == "OK"
        sent = response.request.headers
        assert "messagetype" not in sent and sent["XroadVnpt-messagetype"] == "status"
        assert sent["XroadVnpt-sign-header-key"] == "XroadVnpt-systemid;XroadVnpt-timestamp;XroadVnpt-messagetype"
        refused = state.refused
        wrong = cfg.model_copy(update={"secret": SecretStr("guess")})
        stale = build_auth(cfg, wall=lambda: time.time() - 3600)
        for strategy in (build_auth(wrong), stale):
            with pytest.raises(AuthError):
                call(client, strategy, "/getReceivedEdocList", headers={"messagetype": "status"})
        tampered = sign_headers({"messagetype": "status"}, system_id="000.00.00.H37", secret=SANDBOX_SECRET,
                                timestamp=str(int(time.time() * 1000)))  # fmt: skip
        tampered["XroadVnpt-messagetype"] = "edoc"  # changed after signing
        assert client.get("/getReceivedEdocList", headers=tampered).status_code == 401
        answer = orjson.loads(client.get("/getReceivedEdocList").content)
        assert answer["status"] == "FAIL" and answer["ErrorCode"] == "401"
        assert state.refused == refused + 4


# --- SOAP body token and WS-Security --------------------------------------------------------------------------

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"


class WsSecurityGate:
    """Checks the UsernameToken (text or digest) of every POST before the hub sees it."""

    def __init__(self, app: Any, username: str, password: str) -> None:
        self.app, self.username, self.password = app, username, password

    def valid(self, raw: bytes) -> bool:
        root = etree.fromstring(raw, parser=etree.XMLParser(resolve_entities=False, no_network=True))
        token = root.find(f".//{{{WSSE}}}UsernameToken")
        if token is None or token.findtext(f"{{{WSSE}}}Username") != self.username:
            return False
        password = token.find(f"{{{WSSE}}}Password")
        if password is None:
            return False
        if (password.get("Type") or "").endswith("#PasswordDigest"):
            nonce = base64.b64decode(token.findtext(f"{{{WSSE}}}Nonce") or "")
            created = (token.findtext(f"{{{WSU}}}Created") or "").encode()
            expected = base64.b64encode(hashlib.sha1(nonce + created + self.password.encode()).digest()).decode()
            return password.text == expected
        return password.text == self.password

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        if not self.valid(raw):
            await Response(b"", status_code=401)(scope, receive, send)
            return
        delivered = False

        async def replay() -> Any:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await self.app(scope, replay, send)


def check(connector: Any) -> bool:
    try:
        return bool(connector.check().ok)
    finally:
        connector.close()


def test_soap_body_token_is_checked_by_the_hub() -> None:
    clear_wsdl_cache()
    with serve_in_thread(create_edoc_hub_app(EdocHubState(days=1))) as server:
        assert check(hub_connector(server.url, SANDBOX_TOKEN))
        with pytest.raises(AuthError):
            check(hub_connector(server.url, "not-the-token"))


@pytest.mark.parametrize("digest", [False, True], ids=["password_text", "password_digest"])
def test_ws_security_username_token(digest: bool) -> None:
    clear_wsdl_cache()
    hub = EdocHubState(days=1, tokens={"ws": "-"})  # the gate, not the body, holds the credential here
    stream = hub_config("http://x", "-").streams["documents"]
    streams = {"documents": stream.model_copy(update={"args": {"OrganId": "ws", "Token": "-"}})}
    with serve_in_thread(WsSecurityGate(create_edoc_hub_app(hub), "kpigw", "ws-pass")) as server:
        good = WsSecurityCredentials(type="ws_security", username="kpigw", password=SecretStr("ws-pass"), digest=digest)
        assert check(hub_connector(server.url, "-", auth=good, streams=streams))
        bad = good.model_copy(update={"password": SecretStr("nope")})
        with pytest.raises(AuthError):
            check(hub_connector(server.url, "-", auth=bad, streams=streams))


# --- client TLS certificates ----------------------------------------------------------------------------------


def _pki(directory: Path) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def make(name: str, issuer: Any, issuer_key: Any, *, ca: bool = False, san: bool = False) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )  # fmt: skip
        if san:
            import ipaddress

            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)  # fmt: skip
        if not ca:
            builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer_key.public_key()), critical=False)  # fmt: skip
        else:
            builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ), critical=True)  # fmt: skip
        return builder.sign(issuer_key or key, hashes.SHA256()), key

    ca_cert, ca_key = make("KPI test CA", None, None, ca=True)
    paths: dict[str, Path] = {}
    for name, (cert, key) in {
        "ca": (ca_cert, ca_key),
        "server": make("127.0.0.1", ca_cert.subject, ca_key, san=True),
        "client": make("kpigw-client", ca_cert.subject, ca_key),
    }.items():
        paths[f"{name}_cert"] = directory / f"{name}.pem"
        paths[f"{name}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{name}_key"] = directory / f"{name}.key"
        paths[f"{name}_key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    return paths


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Path]]]:
    pki = _pki(tmp_path_factory.mktemp("pki"))

    async def hello(request: Request) -> Response:
        return Response(b'{"ok": true}', media_type="application/json")

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    config = uvicorn.Config(
        Starlette(routes=[Route("/hello", hello)]), log_level="warning", log_config=None, access_log=False,
        ssl_certfile=str(pki["server_cert"]), ssl_keyfile=str(pki["server_key"]), ssl_ca_certs=str(pki["ca_cert"]),
        ssl_cert_reqs=ssl.CERT_REQUIRED, lifespan="off",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"https://127.0.0.1:{sock.getsockname()[1]}", pki
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


def test_client_certificate_is_presented_and_required(tls_server: tuple[str, dict[str, Path]]) -> None:
    url, pki = tls_server
    tls = TlsConfig(cert_file=pki["client_cert"].name, key_file=pki["client_key"].name, ca_file=pki["ca_cert"].name)
    strategy = build_auth(ClientCertificateAuth(type="client_certificate", tls=tls), base_dir=pki["ca_cert"].parent)
    with make_http_client(base_url=url, **strategy.client_kwargs()) as client:
        assert call(client, strategy, "/hello")[0].status_code == 200
    without = ssl.create_default_context(cafile=str(pki["ca_cert"]))
    with make_http_client(base_url=url, verify=without) as client, pytest.raises(SourceUnavailable):
        call(client, strategy, "/hello")
    missing = tls.model_copy(update={"cert_file": "absent.pem"})
    with pytest.raises(ConfigError, match=r"absent\.pem"):
        build_auth(ClientCertificateAuth(type="client_certificate", tls=missing)).client_kwargs()
