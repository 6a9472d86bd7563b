"""``/v1/admin``: API clients, key issue/rotation/revocation, and the audit log. Admin role required; an
admin scoped to some agencies can only manage clients within that scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy.exc import IntegrityError

from gateway.api import audit
from gateway.api.deps import AdminDep, ConnDep, RuntimeDep
from gateway.api.facts import decode_token, encode_token
from gateway.api.problems import ApiError, problem_responses
from gateway.api.routes_facts import json
from gateway.api.schemas import AuditPage, ClientIn, ClientOut, IssuedKey, KeyOut
from gateway.security import Authenticator, Forbidden, Principal, Scope
from gateway.store import clients

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=problem_responses(400, 401, 403, 404, 422, 429))
ClientId = Annotated[str, Path(max_length=64)]


def _client_view(c: clients.ClientRecord) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "agencies": list(c.agencies), "roles": list(c.roles),
            "rate_per_minute": c.rate_per_minute, "disabled": c.disabled,
            "created_at": c.created_at.isoformat()}  # fmt: skip


def _key_view(k: clients.KeyRecord) -> dict[str, Any]:
    def iso(v: datetime | None) -> str | None:
        return v.isoformat() if v else None

    return {"key_id": k.key_id, "client_id": k.client_id, "created_at": k.created_at.isoformat(),
            "expires_at": iso(k.expires_at), "revoked_at": iso(k.revoked_at)}  # fmt: skip


def _forget(request: Request, client_id: str) -> None:
    """This process stops trusting its cached keys of the client at once (other processes within their TTL)."""
    authenticator: Authenticator = request.app.state.authenticator
    authenticator.forget_client(client_id)


def _managed(conn: Any, caller: Principal, client_id: str) -> clients.ClientRecord:
    found = clients.get_client(conn, client_id)
    if found is None or not caller.scope.covers(Scope.of(found.agencies)):
        raise ApiError(404, "Not found", f"no client {client_id!r} that you may manage")
    return found


@router.get("/clients", response_model=list[ClientOut], summary="API clients you may manage")
def list_clients(conn: ConnDep, caller: AdminDep) -> Response:
    return json([_client_view(c) for c in clients.list_clients(conn) if caller.scope.covers(Scope.of(c.agencies))])


@router.post("/clients", status_code=201, response_model=ClientOut, responses=problem_responses(409),
             summary="Create an API client (then issue it a key)")  # fmt: skip
def create_client(rt: RuntimeDep, caller: AdminDep, body: ClientIn) -> Response:
    if not caller.scope.covers(Scope.of(body.agencies)):
        raise Forbidden("you cannot create a client with agencies outside your own scope")
    try:
        with rt.db.begin() as conn:
            made = clients.create_client(conn, client_id=body.id, name=body.name, agencies=body.agencies,
                                         roles=list(body.roles), rate_per_minute=body.rate_per_minute,
                                         now=datetime.now(UTC))  # fmt: skip
            audit.record_admin(conn, caller, action="create_client", detail=_client_view(made))
    except IntegrityError as exc:
        raise ApiError(409, "Conflict", f"a client {body.id!r} exists already") from exc
    response = json(_client_view(made))
    response.status_code = 201
    return response


@router.get("/clients/{client_id}/keys", response_model=list[KeyOut], summary="A client's keys (never secrets)")
def list_keys(conn: ConnDep, caller: AdminDep, client_id: ClientId) -> Response:
    _managed(conn, caller, client_id)
    return json([_key_view(k) for k in clients.list_keys(conn, client_id)])


@router.post("/clients/{client_id}/keys", status_code=201, response_model=IssuedKey,
             summary="Issue a key; with rotate_grace_hours the client's other keys expire after that")  # fmt: skip
def issue_key(
    request: Request, rt: RuntimeDep, caller: AdminDep, client_id: ClientId,
    expires_in_days: Annotated[int | None, Query(ge=1, le=3650)] = 365,
    rotate_grace_hours: Annotated[int | None, Query(ge=0, le=24 * 90)] = None,
) -> Response:  # fmt: skip
    now = datetime.now(UTC)
    with rt.db.begin() as conn:
        _managed(conn, caller, client_id)
        key, full = clients.issue_key(
            conn, client_id=client_id, now=now,
            expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
            retire_others_after=None if rotate_grace_hours is None else timedelta(hours=rotate_grace_hours),
        )  # fmt: skip
        audit.record_admin(conn, caller, action="issue_key", detail={**_key_view(key), "rotate": rotate_grace_hours})
    _forget(request, client_id)  # a rotation changed the expiry of the client's other keys
    response = json({**_key_view(key), "key": full})
    response.status_code = 201
    return response


@router.delete("/clients/{client_id}/keys/{key_id}", status_code=204, summary="Revoke a key now")
def revoke_key(request: Request, rt: RuntimeDep, caller: AdminDep, client_id: ClientId,
               key_id: Annotated[str, Path(max_length=64)]) -> Response:  # fmt: skip
    with rt.db.begin() as conn:
        _managed(conn, caller, client_id)
        if not clients.revoke_key(conn, client_id=client_id, key_id=key_id, now=datetime.now(UTC)):
            raise ApiError(404, "Not found", f"no live key {key_id!r} of client {client_id!r}")
        audit.record_admin(conn, caller, action="revoke_key", detail={"client_id": client_id, "key_id": key_id})
    _forget(request, client_id)
    return Response(status_code=204)


@router.get("/audit", response_model=AuditPage, summary="The audit log (province-wide admins only)")
def get_audit(
    conn: ConnDep, caller: AdminDep, after: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:  # fmt: skip
    if not caller.scope.everything:
        raise Forbidden("the audit log is for province-wide admins")
    items = audit.list_audit(conn, after=decode_token(after, "aud") if after else 0, limit=limit + 1, actor=actor)
    more = len(items) > limit
    items = items[:limit]
    return json({"items": items, "next": encode_token("aud", items[-1]["id"]) if more and items else None})
