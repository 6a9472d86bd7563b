"""OIDC bearer tokens (a real JWKS served on loopback, verified with pyjwt) and the open sandbox mode."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from gateway.standins.server import serve_in_thread
from tests.api_support import Api, fact, make_runtime, put, serve

ISSUER = "https://sso.laocai.gov.vn/realms/kpi"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, signing_key: rsa.RSAPrivateKey) -> Iterator[Api]:
    jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key(), as_dict=True)
    jwks = FastAPI()

    @jwks.get("/certs")
    def certs() -> dict[str, Any]:
        return {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}

    tmp: Path = tmp_path_factory.mktemp("oidc")
    with serve_in_thread(jwks) as idp:
        runtime = make_runtime(f"sqlite:///{tmp / 'o.db'}", tmp, oidc_issuer=ISSUER, oidc_audience="kpigw",
                               oidc_jwks_url=f"{idp.url}/certs")  # fmt: skip
        put(runtime, [fact(1), fact(2, agency="SNV", unit="SNV.X")])
        with serve(runtime) as served:
            yield served
        runtime.close()


def _token(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    body = {"iss": ISSUER, "aud": "kpigw", "sub": "app-1", "exp": int(time.time()) + 300,
            "kpigw_agencies": ["SKHCN"], "kpigw_roles": "read_facts", **claims}  # fmt: skip
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})


def _get(api: Api, token: str, path: str = "/v1/facts", **params: Any) -> Any:
    return api.http.get(path, params=params, headers={"Authorization": f"Bearer {token}"})


def test_oidc_token_scopes_the_caller(api: Api, signing_key: rsa.RSAPrivateKey) -> None:
    r = _get(api, _token(signing_key))
    assert r.status_code == 200 and {f["agency"] for f in r.json()["items"]} == {"SKHCN"}
    assert _get(api, _token(signing_key), agency="SNV").status_code == 403
    everything = _get(api, _token(signing_key, kpigw_agencies="*")).json()["items"]
    assert {f["agency"] for f in everything} == {"SKHCN", "SNV"}
    assert _get(api, _token(signing_key, kpigw_roles=[])).status_code == 403


@pytest.mark.parametrize("claims", [{"exp": int(time.time()) - 600}, {"iss": "https://evil.example"},
                                    {"aud": "someone-else"}])  # fmt: skip
def test_oidc_refuses_bad_tokens(api: Api, signing_key: rsa.RSAPrivateKey, claims: dict[str, Any]) -> None:
    r = _get(api, _token(signing_key, **claims))
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"


def test_oidc_refuses_other_keys_and_alg_none(api: Api) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert _get(api, _token(stranger)).status_code == 401
    unsigned = jwt.encode({"iss": ISSUER, "aud": "kpigw", "sub": "x", "exp": int(time.time()) + 60,
                           "kpigw_agencies": "*", "kpigw_roles": "read_facts admin"}, None, algorithm="none",
                          headers={"kid": "k1"})  # fmt: skip
    assert _get(api, unsigned).status_code == 401


def test_open_mode_is_a_labelled_sandbox(tmp_path: Path) -> None:
    runtime = make_runtime(f"sqlite:///{tmp_path / 'open.db'}", tmp_path, auth_mode="open")
    put(runtime, [fact(1)])
    with serve(runtime) as api:
        r = api.http.get("/v1/facts", params={"limit": 5})
        assert r.status_code == 200 and len(r.json()["items"]) == 1
        assert r.headers["x-kpigw-sandbox"].startswith("open")
        assert api.http.get("/v1/facts", headers={"X-API-Key": "kpigw_bad_key"}).status_code == 401
    runtime.close()


def test_serve_requires_credentials_by_default(tmp_path: Path) -> None:
    runtime = make_runtime(f"sqlite:///{tmp_path / 'closed.db'}", tmp_path)
    assert runtime.settings.auth_mode == "required"
    with serve(runtime) as api:
        assert api.http.get("/v1/facts").status_code == 401
    runtime.close()
