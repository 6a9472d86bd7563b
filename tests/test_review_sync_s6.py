"""Review of the sync engine and the connectors (session 6): each test failed on the code before its fix.

The sources here are small real HTTP servers on loopback (:func:`_tracker`), shaped like the assignment tracker
of ``docs/connectors.md``: they filter by an inclusive lower bound on the update time, sort by it and page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from gateway.metrics import Metrics
from gateway.retry import RetryPolicy
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings
from gateway.standins.server import RunningServer, serve_in_thread
from gateway.types import VN_TZ
from tests.conftest import ROOT, write_eoffice_source
from tests.spine_support import count, rows, run_source

START = datetime(2026, 9, 1, 8, 0, tzinfo=VN_TZ)
FORMAT = "%d/%m/%Y %H:%M:%S"


@dataclass
class Tracker:
    """The source's rows: (the update time the source sorts and filters by, the JSON it sends for the row)."""

    rows: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def add(self, i: int, *, modified: datetime, shown: Any = None, **extra: Any) -> None:
        row = {"uid": f"A{i:04d}", "agency": "SKHCN", "title": f"việc {i}", "assignee": "u1001",
               "created": modified.strftime(FORMAT), "deadline": (modified + timedelta(days=5)).strftime(FORMAT),
               "modified": modified.strftime(FORMAT) if shown is None else shown, **extra}  # fmt: skip
        self.rows.append((modified, row))
        self.rows.sort(key=lambda r: (r[0], r[1]["uid"]))


def _tracker_app(tracker: Tracker) -> Starlette:
    async def items(request: Request) -> JSONResponse:
        params = dict(request.query_params)
        tracker.requests.append(params)
        tracker.headers.append(dict(request.headers))
        since = datetime.strptime(params["since"], FORMAT).replace(tzinfo=VN_TZ)
        page, size = int(params["page"]), int(params["size"])
        selected = [row for moment, row in tracker.rows if moment >= since]
        return JSONResponse({"code": "0", "items": selected[(page - 1) * size : page * size]})

    return Starlette(routes=[Route("/v2/assignments", items)])


@pytest.fixture
def tracker() -> Iterator[tuple[Tracker, RunningServer]]:
    state = Tracker()
    with serve_in_thread(_tracker_app(state)) as server:
        yield state, server


def _source(directory: Path, url: str, *, size: int = 3, **overrides: Any) -> None:
    source: dict[str, Any] = {
        "name": "acme", "kind": "rest", "base_url": url, "id_system": "ioffice",
        "auth": {"type": "api_key", "header": "X-Acme-Key", "api_key": "${ACME_KEY}"},
        "envelope": {"status_path": "code", "success": ["0"]},
        "streams": {"assignments": {
            "path": "/v2/assignments", "records": "items", "key": "uid",
            "paginator": {"type": "cursor_keyset", "page_param": "page", "size_param": "size", "size": size},
            "cursor": {"field": "modified", "param": "since", "format": "dd/MM/yyyy HH:mm:ss", "lookback": "10m",
                       "start": "01/01/2026 00:00:00", "sorted": True},
            "normalize": {"kind": "task", "key": "task:{agency}:acme-{uid}", "agency": "agency", "title": "title",
                          "received_at": {"path": "created", "format": "dd/MM/yyyy HH:mm:ss"},
                          "due_at": {"path": "deadline", "format": "dd/MM/yyyy HH:mm:ss"},
                          "done_at": {"path": "done", "format": "epoch"},
                          "participants": [{"role": "lead", "user": "assignee"},
                                           {"role": "co_handler", "users": "helpers"}]},
        }},
    }  # fmt: skip
    source.update(overrides)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "acme.yaml").write_text(yaml.safe_dump(source, allow_unicode=True, sort_keys=False), "utf-8")


@pytest.fixture
def make_runtime(tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    built: list[Runtime] = []

    def make(url: str, *, env: dict[str, str] | None = None, **overrides: Any) -> Runtime:
        sources = tmp_path / "sources"
        _source(sources, url, **overrides)
        settings = Settings(database_url=f"sqlite:///{tmp_path}/store.db", sources_dir=sources,
                            mappings_dir=ROOT / "mappings", scheduler=False, prepare_workers=0)  # fmt: skip
        runtime = build_runtime(settings, retry=RetryPolicy.instant(), metrics=Metrics(),
                                env={"ACME_KEY": "k-secret-123", **(env or {})})  # fmt: skip
        built.append(runtime)
        return runtime

    yield make
    for runtime in built:
        runtime.close()


def _sync(runtime: Runtime) -> Any:
    return run_source(runtime, "acme")


# -- 1. keyset paging and a record whose cursor value does not parse ----------------------------------------


def test_keyset_source_with_an_unreadable_cursor_value_quarantines_that_record_and_goes_on(
    tracker: tuple[Tracker, RunningServer], make_runtime: Callable[..., Runtime]
) -> None:
    """A record whose update time the source formats badly is a bad record, not a broken stream.

    Before: the keyset paginator parsed every record's cursor itself, so the ValueError of the bad one escaped
    ``read`` and the engine (which handles only the gateway's errors): ``run`` raised, the run stayed
    "running", and every later sync died on the same page, so nothing after it was ever read. Page-number
    paging of the same data quarantined the record and went on. Both placements matter: inside a page and as
    the last record of a full page (the one the next page's bound is taken from)."""
    state, server = tracker
    for i in range(8):
        state.add(i, modified=START + timedelta(minutes=i), shown="31/02/2026 99:99:99" if i in (2, 5) else None)
    runtime = make_runtime(server.url, size=3)
    report = _sync(runtime)
    assert report.outcome == "partial", report
    db = runtime.db
    archived = {r["record_key"] for r in rows(db, "SELECT record_key FROM raw_record")}
    assert archived == {f"A{i:04d}" for i in range(8)} - {"A0002", "A0005"}
    bad = rows(db, "SELECT record_key, stage, reason FROM quarantine WHERE status = 'open' ORDER BY record_key")
    assert [(r["record_key"], r["stage"]) for r in bad] == [("A0002", "fetch"), ("A0005", "fetch")]
    assert all("bad cursor value" in r["reason"] for r in bad)
    cursor = rows(db, "SELECT value FROM cursor WHERE source = 'acme'")[0]["value"]
    assert datetime.fromisoformat(cursor) == START + timedelta(minutes=7)
    assert count(db, "SELECT count(*) FROM sync_run WHERE outcome = 'running'") == 0


# -- 2. epoch dates out of the platform's range -------------------------------------------------------------


def test_an_epoch_date_out_of_range_is_a_bad_record_not_a_crash(
    tracker: tuple[Tracker, RunningServer], make_runtime: Callable[..., Runtime]
) -> None:
    """``1e20`` (or ``inf``) in an epoch field: Python raises OverflowError or OSError there, not ValueError.

    Before: neither the field map (which turns ValueError/TypeError/KeyError into a NormalizeError) nor the
    cursor reader caught them, so the error escaped the engine: ``run`` raised and the stream never got past
    the record. Now the date parser says ValueError, the record is quarantined and the sync goes on."""
    state, server = tracker
    for i in range(4):
        state.add(i, modified=START + timedelta(minutes=i), done=1e20 if i == 1 else "inf" if i == 2 else None)
    runtime = make_runtime(server.url)
    report = _sync(runtime)
    assert report.outcome == "partial", report
    bad = rows(runtime.db, "SELECT record_key, stage FROM quarantine WHERE status = 'open' ORDER BY record_key")
    assert [(r["record_key"], r["stage"]) for r in bad] == [("A0001", "normalize"), ("A0002", "normalize")]
    assert count(runtime.db, "SELECT count(*) FROM work_item") == 2


# -- 3. next links that point at another host --------------------------------------------------------------


def _linked_app(seen: list[dict[str, str]], next_base: Callable[[], str]) -> Starlette:
    """Pages of two records; ``next`` is an absolute URL built on ``next_base()`` (another host, or a downgrade
    from https to http, as a misconfigured reverse proxy writes it)."""

    async def linked(request: Request) -> JSONResponse:
        seen.append(dict(request.headers))
        start = int(request.query_params.get("from", "0"))
        items = [{"uid": f"L{i}", "agency": "SKHCN", "modified": START.strftime(FORMAT)} for i in (start, start + 1)]
        return JSONResponse({"code": "0", "items": items, "next": f"{next_base()}/v2/linked?from={start + 2}"})

    return Starlette(routes=[Route("/v2/linked", linked)])


def test_a_next_link_to_another_host_is_refused_before_credentials_go_there(
    make_runtime: Callable[..., Runtime],
) -> None:
    """Before: a ``next_link`` URL was requested as it came, with the source's credentials applied, wherever it
    pointed: the API key went to a host that is not the source (and would go in clear text after an
    https -> http downgrade). ``gateway.http.fetch`` refuses exactly that for redirects. Now a next link must
    have the source's scheme, host and port; any other is a ProtocolError and nothing is sent there."""
    source_seen: list[dict[str, str]] = []
    foreign_seen: list[dict[str, str]] = []
    with serve_in_thread(_linked_app(foreign_seen, lambda: "http://127.0.0.1:9")) as foreign:
        foreign_url = foreign.url
        with serve_in_thread(_linked_app(source_seen, lambda: foreign_url)) as source:
            streams = {"linked": {
                "path": "/v2/linked", "records": "items", "key": "uid",
                "paginator": {"type": "next_link", "next_path": "next"},
                "normalize": {"kind": "task", "key": "task:{agency}:acme-{uid}", "agency": "agency"},
            }}  # fmt: skip
            runtime = make_runtime(source.url, streams=streams)
            report = _sync(runtime)
    assert foreign_seen == [], "the source's credentials were sent to another host"
    assert source_seen and source_seen[0].get("x-acme-key") == "k-secret-123"
    assert report.outcome == "failed" and report.streams[0].error_kind == "ProtocolError", report
    assert "k-secret-123" not in (report.streams[0].error or "")


# -- 4. secrets written in the source file ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "key"),
    [
        # connectors/auth_config.py: "secret and key_password are refused as literals"
        ("{type: client_certificate, tls: {cert_file: c.pem, key_file: k.pem, key_password: hunter2}}",
         "auth.tls.key_password"),
        # gateway/yamlconf.py: "${ENV_VAR:-default} (non-secret defaults only)"
        ('{type: basic, username: u, password: "${PW:-hunter2}"}', "auth.password"),
    ],
)  # fmt: skip
def test_a_secret_written_in_a_rest_source_file_is_refused(tmp_path: Path, auth: str, key: str) -> None:
    """Before: both loaded, the secret living in the file (the check knew neither key_password nor defaults)."""
    from gateway.errors import ConfigError
    from gateway.sources import load_source

    path = tmp_path / "demo.yaml"
    text = f"name: demo\nkind: rest\nbase_url: http://127.0.0.1:1\nid_system: x\nauth: {auth}\nstreams: {{}}\n"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_source(path, env={})
    assert f"{path}:5:" in str(info.value) and key in str(info.value) and "hunter2" not in str(info.value)


def test_a_soap_header_secret_field_written_in_the_file_is_refused(tmp_path: Path) -> None:
    """``secret_fields`` of a SOAP header are "write them as ${ENV} / ${file:...}" (connectors/soap/config.py);
    before, a literal ``Password: hunter2`` there loaded (its key is the service's element name, not a secret
    key the check knew)."""
    from gateway.errors import ConfigError
    from gateway.sources import load_source

    path = tmp_path / "hub.yaml"
    path.write_text(
        "name: hub\nkind: soap\nwsdl: hub.wsdl\nid_system: edxml\n"
        "auth: {type: soap_header, namespace: 'http://tempuri.org/', element: AuthHeader,\n"
        "       fields: {UserName: gw}, secret_fields: {Password: hunter2}}\nstreams: {}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_source(path, env={})
    message = str(info.value)
    assert "auth.secret_fields.Password" in message and "secrets may not be written" in message
    assert "hunter2" not in message


# -- 5. the query string of a refused redirect in the run's stored error ------------------------------------


def _redirecting_app(location: Callable[[Request], str]) -> Starlette:
    async def moved(request: Request) -> RedirectResponse:
        return RedirectResponse(location(request), status_code=302)

    return Starlette(routes=[Route("/v2/assignments", moved)])


@pytest.mark.parametrize(
    "location",
    [
        lambda _request: "http://127.0.0.2:9/v2/assignments?moved=1",  # to another host: refused
        lambda request: str(request.url),  # to itself, for ever: too many redirects
    ],
    ids=["cross-host", "loop"],
)
def test_a_refused_redirect_does_not_store_the_query_string_in_the_run(
    make_runtime: Callable[..., Runtime], caplog: pytest.LogCaptureFixture, location: Callable[[Request], str]
) -> None:
    """A legacy API that takes its token in the query string (``params: {token: "${ACME_TOKEN}"}``, which the
    literal-secret check expects) sends it on every call. Before: a refused redirect put the whole request URL,
    query string and all, in the error's ``where``, so the token was stored in ``sync_run.error`` (served by
    the operations API) and logged. ``raise_for_status`` names only the path for that reason; now the redirect
    errors do the same."""
    with serve_in_thread(_redirecting_app(location)) as server:
        streams = {"assignments": {
            "path": "/v2/assignments", "records": "items", "key": "uid", "params": {"token": "${ACME_TOKEN}"},
            "normalize": {"kind": "task", "key": "task:{agency}:acme-{uid}", "agency": "agency"},
        }}  # fmt: skip
        runtime = make_runtime(server.url, streams=streams, env={"ACME_TOKEN": "tok-secret-456"})
        report = _sync(runtime)
    assert report.outcome == "failed" and report.streams[0].error_kind == "ProtocolError", report
    (run,) = rows(runtime.db, "SELECT error FROM sync_run")
    assert "redirect" in run["error"] and "/v2/assignments" in run["error"]
    assert "tok-secret-456" not in run["error"]
    assert "tok-secret-456" not in caplog.text


# -- 6. the national axis: acknowledging a message the axis no longer holds ----------------------------------


def test_vxp_a_message_gone_from_the_axis_before_its_acknowledgement_does_not_block_the_stream(
    tmp_path: Path,
) -> None:
    """The connector acknowledges the committed cursor's ids at the start of the next run and means to skip
    those the axis no longer knows ("expired: nothing left to acknowledge"). But it looked for "ErrorCode 404"
    in the error, and the axis answers that with HTTP 404, which the guarded fetch turns into "HTTP 404" before
    the envelope is read. Before: the acknowledgement re-raised, the stream failed at its first call on every
    later run, and nothing new was ever read from the axis. Now a 404 to ``updateStatus`` is skipped."""
    from datetime import date

    from gateway.standins.vxp import VxpState, create_vxp_app
    from tests.test_vxp import runtime as vxp_runtime
    from tests.test_vxp import sync as vxp_sync

    state = VxpState(start=date(2026, 10, 27), days=3, future_days=2)
    with serve_in_thread(create_vxp_app(state)) as server:
        rt = vxp_runtime(tmp_path, server.url)
        try:
            assert vxp_sync(rt).outcome == "success"
            gone = sorted(state.ids("edoc"))[0]
            state.expire(gone)  # read and committed; dropped by the axis before the next run acknowledged it
            new = state.add_documents("SKHCN", 2)
            report = vxp_sync(rt)
            assert report.outcome == "success", report
            assert report.read == 2
            archived = {r["record_key"] for r in rows(rt.db, "SELECT record_key FROM raw_record")}
            assert set(new) <= archived and gone in archived
            assert vxp_sync(rt).outcome == "success"
            assert {state.statuses()[i] for i in new} == {"done"}
        finally:
            rt.close()


# -- 7. a participants list that the source sends as a single string ---------------------------------------


def test_a_single_user_id_where_a_list_is_expected_is_one_participant_not_its_characters(
    tracker: tuple[Tracker, RunningServer], make_runtime: Callable[..., Runtime]
) -> None:
    """Legacy systems send a one-element list as the bare value (``"nguoiPhoiHop": "u1003"``). Before: the field
    map iterated the string, so the co-handlers were ``u``, ``1``, ``0``, ``0``, ``3``; none resolved, the record
    was quarantined for five unknown people and u1003 got no credit. Now a string is one user id."""
    state, server = tracker
    state.add(1, modified=START, helpers="u1003")
    state.add(2, modified=START + timedelta(minutes=1), helpers=["u1003", "u1004"])
    runtime = make_runtime(server.url)
    report = _sync(runtime)
    assert report.outcome == "success", (report, rows(runtime.db, "SELECT reason FROM quarantine"))
    sql = "SELECT record_key, person_id FROM fact WHERE role = 'co_handler' AND state = 'active'"
    credited = {(r["record_key"], r["person_id"]) for r in rows(runtime.db, sql)}
    assert credited == {("A0001", "P0003"), ("A0002", "P0003"), ("A0002", "P0004")}


# -- 8. a page total that is not a number ------------------------------------------------------------------


def test_a_page_total_that_is_not_a_number_fails_the_stream_not_the_run(make_runtime: Callable[..., Runtime]) -> None:
    """``total_path`` read ``"total": "không rõ"`` with ``int()``. Before: the ValueError escaped the engine (it
    handles the gateway's errors), ``run`` raised, the run stayed "running" and the source's other streams
    were never synced. Now it is a ProtocolError: this stream fails with the reason, the others run."""

    async def paged(request: Request) -> JSONResponse:
        page = int(request.query_params["page"])
        items = [{"uid": f"P{page}{i}", "agency": "SKHCN"} for i in range(2)]
        return JSONResponse({"code": "0", "items": items, "total": "không rõ"})

    async def single(request: Request) -> JSONResponse:
        return JSONResponse({"code": "0", "items": [{"uid": "S1", "agency": "SKHCN"}]})

    app = Starlette(routes=[Route("/paged", paged), Route("/single", single)])
    normalize = {"kind": "task", "key": "task:{agency}:{uid}", "agency": "agency"}
    streams = {
        "paged": {"path": "/paged", "records": "items", "key": "uid", "normalize": normalize,
                  "paginator": {"type": "page_number", "size": 2, "total_path": "total"}},
        "single": {"path": "/single", "records": "items", "key": "uid", "normalize": normalize},
    }  # fmt: skip
    with serve_in_thread(app) as server:
        runtime = make_runtime(server.url, streams=streams)
        report = _sync(runtime)
    paged_report, single_report = report.streams
    assert paged_report.error_kind == "ProtocolError" and "total" in (paged_report.error or ""), paged_report
    assert single_report.error is None and single_report.read == 1
    assert report.outcome == "failed"
    assert count(runtime.db, "SELECT count(*) FROM sync_run WHERE outcome = 'running'") == 0


# -- 9. the overall deadline bounds the response's header phase too --------------------------------------


def test_the_overall_deadline_bounds_a_source_that_drips_its_response_headers() -> None:
    """Each header byte comes within the read timeout, so no single read times out. The deadline was checked
    only once the body streamed: with read 0.5 s and deadline 0.3 s this call took about 3 s (a source could
    hold a sync for as long as h11 accepts header bytes: 64 KiB at one byte per read timeout). Every socket
    wait of a fetch now ends at the deadline (gateway.http._DeadlineBackend)."""
    import socket
    import threading
    import time

    from gateway.errors import SourceUnavailable
    from gateway.http import HttpLimits, fetch, make_http_client

    listener = socket.create_server(("127.0.0.1", 0))
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 40 + b"\r\nContent-Length: 2\r\n\r\n{}"

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            try:
                for byte in head:
                    conn.sendall(bytes([byte]))
                    time.sleep(0.04)
            except OSError:
                pass  # the client gave up: the point

    threading.Thread(target=drip, daemon=True).start()
    limits = HttpLimits(connect_timeout=1.0, read_timeout=0.5, deadline=0.3)
    started = time.monotonic()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
        with make_http_client(limits=limits) as client:
            request = client.build_request("GET", url)
            with pytest.raises(SourceUnavailable, match=r"exceeded its 0\.3s deadline"):
                fetch(client, request, limits=limits)
        assert time.monotonic() - started < 1.5
    finally:
        listener.close()


def test_a_call_after_one_that_hit_its_deadline_has_a_deadline_of_its_own() -> None:
    """The deadline is the current fetch's (a context variable it sets and resets): a later call on the same
    client, and a plain request outside fetch, wait as long as their own timeouts allow."""
    import contextlib
    import socket
    import threading
    import time

    from gateway.errors import SourceUnavailable
    from gateway.http import HttpLimits, fetch, make_http_client

    listener = socket.create_server(("127.0.0.1", 0))
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"

    def answer_after(conn: socket.socket, delay: float) -> None:
        with conn:
            conn.recv(65536)
            time.sleep(delay)
            with contextlib.suppress(OSError):  # the client gave up on the first
                conn.sendall(answer)

    def serve() -> None:
        for delay in (1.0, 0.4, 0.4):  # the first answer comes after the deadline; the others within it
            threading.Thread(target=answer_after, args=(listener.accept()[0], delay), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    limits = HttpLimits(connect_timeout=1.0, read_timeout=5.0, deadline=0.6)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
    try:
        with make_http_client(limits=limits) as client:
            with pytest.raises(SourceUnavailable, match="deadline"):
                fetch(client, client.build_request("GET", url), limits=limits)
            response, body = fetch(client, client.build_request("GET", url), limits=limits)
            assert response.status_code == 200 and body == b"{}"
            assert client.get(url).status_code == 200  # outside fetch: the read timeout alone
    finally:
        listener.close()


# -- 10. a connector bug leaves a finished, failed run behind it ---------------------------------------------


class _BuggyAfterFirstPage:
    """The e-office connector, with a bug after its first page: an exception that is not the gateway's."""

    def __init__(self, inner: Any) -> None:
        self._inner, self.name = inner, inner.name

    def streams(self) -> list[str]:
        return list(self._inner.streams())

    def read(self, stream: str, cursor: str | None) -> Iterator[Any]:
        for n, page in enumerate(self._inner.read(stream, cursor)):
            if n == 1:
                raise ZeroDivisionError("a value the connector did not expect: 17/0 for user u1001")
            yield page

    def normalize(self, record: Any) -> Any:
        return self._inner.normalize(record)

    def close(self) -> None:
        self._inner.close()


def test_a_connector_bug_still_propagates_but_its_run_is_recorded_as_failed(
    tmp_path: Path, eoffice_env: dict[str, str]
) -> None:
    """A bug (not a GatewayError) propagates out of ``run`` on purpose: it is logged with its traceback by
    whoever called, never swallowed as a source problem. Before, it also left the run 'running' until the
    source's next run abandoned it: /v1/sources showed a sync in progress that had died. The run is now
    finished as failed, with the exception's type only (its text may hold a record's values)."""
    write_eoffice_source(tmp_path / "sources", page_size=20)
    settings = Settings(database_url=f"sqlite:///{tmp_path}/s.db", sources_dir=tmp_path / "sources",
                        mappings_dir=ROOT / "mappings", scheduler=False)  # fmt: skip
    runtime = build_runtime(settings, retry=RetryPolicy.instant(), metrics=Metrics(), env=eoffice_env)
    connector = _BuggyAfterFirstPage(runtime.connector("eoffice"))
    try:
        with pytest.raises(ZeroDivisionError):
            runtime.sync.run(connector)  # type: ignore[arg-type]
        (run,) = rows(runtime.db, "SELECT outcome, error, error_kind, finished_at FROM sync_run")
        assert run["outcome"] == "failed" and run["finished_at"] is not None
        assert run["error_kind"] == "InternalError"
        assert "ZeroDivisionError" in run["error"] and "u1001" not in run["error"]
        assert count(runtime.db, "SELECT count(*) FROM fact") > 0  # the first page was committed
        failed = runtime.metrics.sync_runs.labels("eoffice", "failed")._value.get()
        assert failed == 1
    finally:
        connector.close()
        runtime.close()


# -- 11. a token's lifetime that is not a number ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "answer"),
    [
        ("login", b'{"data": {"token": "t", "expires": "soon"}}'),
        ("login", b'{"data": {"token": "t", "expires": "nan"}}'),
        ("oauth2", b'{"access_token": "t", "expires_in": "one hour"}'),
        ("oauth2", b'{"access_token": "t", "expires_in": -5}'),
        ("oauth2", b'["t"]'),
        ("oauth2", b'{"access_token": "t", "expires_in": true}'),
    ],
)
def test_a_token_answer_the_gateway_cannot_read_is_a_protocol_error(kind: str, answer: bytes) -> None:
    """float() of a lifetime like "soon" raised a ValueError (and a JSON list an AttributeError) that no one
    catches: the sync ended with the run left 'running' and the source's other streams never ran. It is the
    source's protocol error, naming the token endpoint, and the stream fails with it."""
    import httpx
    from pydantic import SecretStr

    from connectors.auth import build_auth
    from connectors.declarative.config import LoginTokenAuth, OAuth2ClientCredentials
    from gateway.errors import ProtocolError

    cfg: Any
    if kind == "login":
        cfg = LoginTokenAuth(type="login_token", path="/login", username="u", password=SecretStr("p"),
                             expires_in_path="data.expires")  # fmt: skip
    else:
        cfg = OAuth2ClientCredentials(type="oauth2_client_credentials", token_url="/token", client_id="c",
                                      client_secret=SecretStr("s"))  # fmt: skip
    strategy = build_auth(cfg)

    def send(method: str, url: str, **_: Any) -> tuple[httpx.Response, bytes]:
        return httpx.Response(200, content=answer), answer

    with pytest.raises(ProtocolError, match="token") as caught:
        strategy.apply(httpx.Request("GET", "http://source.example/x"), send)
    assert caught.value.where in ("/login", "/token")


# -- 12. the national axis: a listed message it can no longer deliver --------------------------------------


def test_vxp_a_message_the_axis_cannot_deliver_is_quarantined_and_the_stream_goes_on(tmp_path: Path) -> None:
    """``getEdoc`` refused one listed message for good (the axis's copy is damaged). Before: the refusal failed
    the stream, the message stayed listed, and every later run failed at the same message, reading nothing
    after it. Now it is quarantined with the axis's reason, acknowledged ``fail`` once that is committed (as an
    unreadable packet is), and the rest is read."""
    from datetime import date

    from gateway.standins.vxp import VxpState, create_vxp_app
    from tests.test_vxp import runtime as vxp_runtime
    from tests.test_vxp import sync as vxp_sync

    state = VxpState(start=date(2026, 10, 27), days=3, future_days=2)
    with serve_in_thread(create_vxp_app(state)) as server:
        rt = vxp_runtime(tmp_path, server.url)
        try:
            listed = sorted(state.ids("edoc"))
            broken = listed[len(listed) // 2]
            state.withhold(broken)
            report = vxp_sync(rt)
            assert report.outcome == "partial", report
            (entry,) = rows(rt.db, "SELECT record_key, reason, status FROM quarantine")
            assert entry["record_key"] == broken and "410" in entry["reason"] and entry["status"] == "open"
            archived = {r["record_key"] for r in rows(rt.db, "SELECT record_key FROM raw_record")}
            assert set(listed) - {broken} <= archived
            assert vxp_sync(rt).outcome == "success"  # the next run acknowledges it, and the stream is clear
            assert state.statuses()[broken] == "fail"
        finally:
            rt.close()


def test_vxp_an_http_error_on_a_message_still_fails_the_stream_and_fails_nothing_at_the_axis(tmp_path: Path) -> None:
    """Only the axis's own refusal (its FAIL envelope) quarantines a message and acknowledges it ``fail``. An
    HTTP-level error (here a 400 from whatever stands in front of the axis; a refused redirect or the size cap
    alike) says nothing about the message, and a ``fail`` acknowledgement cannot be undone: the stream fails,
    as before, and the message stays listed for the next run (the session review's note)."""
    from datetime import date

    from gateway.standins.vxp import VxpState, create_vxp_app
    from tests.test_vxp import runtime as vxp_runtime
    from tests.test_vxp import sync as vxp_sync

    state = VxpState(start=date(2026, 10, 27), days=3, future_days=2)
    with serve_in_thread(create_vxp_app(state)) as server:
        rt = vxp_runtime(tmp_path, server.url)
        try:
            broken = sorted(state.ids("edoc"))[0]
            state.withhold(broken, http_status=400)
            report = vxp_sync(rt)
            assert report.outcome == "failed" and "HTTP 400" in (report.streams[-1].error or ""), report
            assert count(rt.db, "SELECT count(*) FROM quarantine") == 0
            assert vxp_sync(rt).outcome == "failed"  # still listed, still refused: nothing was failed for good
            assert state.statuses().get(broken) != "fail"
        finally:
            rt.close()


@pytest.mark.parametrize("lifetime", ["0", 0, None, ""])
def test_a_token_lifetime_of_zero_or_none_means_the_configured_default(lifetime: Any) -> None:
    from connectors.auth import _lifetime

    assert _lifetime(lifetime, 300.0, where="/token") == 300.0
    assert _lifetime("3600", 300.0, where="/token") == 3600.0
