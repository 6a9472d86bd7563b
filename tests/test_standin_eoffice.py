"""The e-office stand-in over a real loopback HTTP server, and the shared seed data."""

from __future__ import annotations

import socket
import time
import tracemalloc
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.standins import seed
from gateway.standins.eoffice import EOfficeState, create_eoffice_app
from gateway.standins.server import RunningServer, serve_in_thread
from gateway.types import VN_TZ

REPO = Path(__file__).resolve().parents[1]
LIST_IN = "/qlvb/api/van-ban-den/danh-sach"
LIST_OUT = "/qlvb/api/van-ban-di/danh-sach"
LIST_TASKS = "/qlvb/api/cong-viec/danh-sach"
CREDENTIALS = {"username": "kpigw", "password": "sandbox-secret"}


def parse_dt(text: str) -> datetime:
    return datetime.strptime(text, "%d/%m/%Y %H:%M:%S").replace(tzinfo=VN_TZ)


def parse_d(text: str) -> date:
    return datetime.strptime(text, "%d/%m/%Y").date()


def fmt_dt(moment: datetime) -> str:
    return moment.strftime("%d/%m/%Y %H:%M:%S")


def sort_key(row: dict[str, Any]) -> tuple[datetime, int]:
    return parse_dt(row["ngayCapNhat"]), row["id"]


class Api:
    """A minimal client: logs in once, then GETs with the token."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.token = login(client)

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = self.client.get(path, params=params, headers={"X-Authentication-Token": self.token})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["status"]["code"] == "0", body
        return body

    def all_items(self, path: str, page_rec: int = 1000, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            data = self.get(path, pageNo=page, pageRec=page_rec, **params)["data"]
            items += data["items"]
            if page * page_rec >= data["totalRecord"]:
                assert len(items) == data["totalRecord"]
                return items
            page += 1


def login(client: httpx.Client) -> str:
    response = client.post("/qlvb/api/login", json=CREDENTIALS)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == {"code": "0", "message": "OK"}
    token: str = body["data"]["token"]
    return token


@pytest.fixture(scope="module")
def state() -> EOfficeState:
    return EOfficeState()  # read-only in this module: tests that mutate build their own


@pytest.fixture(scope="module")
def server(state: EOfficeState) -> Iterator[RunningServer]:
    with serve_in_thread(create_eoffice_app(state)) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


@pytest.fixture
def api(client: httpx.Client) -> Api:
    return Api(client)


@pytest.fixture(scope="module")
def all_incoming(server: RunningServer) -> list[dict[str, Any]]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        return Api(http).all_items(LIST_IN, kemNhatKy=1)


@pytest.fixture
def fresh() -> Iterator[tuple[EOfficeState, Api]]:
    """A state of its own (for mutations), served, with a logged-in client."""
    own = EOfficeState(token_ttl=300)
    with serve_in_thread(create_eoffice_app(own)) as running, httpx.Client(base_url=running.url, timeout=30) as http:
        yield own, Api(http)


# ------------------------------------------------------------------------------------------- auth


def test_login_returns_token_and_wrong_password_is_an_envelope_error(client: httpx.Client) -> None:
    ok = client.post("/qlvb/api/login", json=CREDENTIALS).json()
    assert ok["data"]["expiresIn"] == 300
    assert len(ok["data"]["token"]) >= 20
    bad = client.post("/qlvb/api/login", json={"username": "kpigw", "password": "nope"})
    assert bad.status_code == 200
    assert bad.json() == {
        "status": {"code": "AUTH_FAILED", "message": "Sai tên đăng nhập hoặc mật khẩu"},
        "data": None,
    }


@pytest.mark.parametrize("headers", [{}, {"X-Authentication-Token": "forged"}])
def test_every_endpoint_requires_a_token(client: httpx.Client, headers: dict[str, str]) -> None:
    for path in (LIST_IN, LIST_OUT, LIST_TASKS, "/qlvb/api/van-ban-den/1/nhat-ky", "/qlvb/api/van-ban-di/2/nhat-ky"):
        response = client.get(path, headers=headers)
        assert response.status_code == 401
        assert response.json()["status"]["code"] == "401"
        assert response.json()["data"] is None


def test_tokens_expire_after_ttl_and_can_be_revoked() -> None:
    own = EOfficeState(token_ttl=0.3)
    with serve_in_thread(create_eoffice_app(own)) as running, httpx.Client(base_url=running.url) as http:
        token = login(http)
        headers = {"X-Authentication-Token": token}
        assert http.get(LIST_TASKS, headers=headers).status_code == 200
        time.sleep(0.45)
        assert http.get(LIST_TASKS, headers=headers).status_code == 401
        headers = {"X-Authentication-Token": login(http)}
        assert http.get(LIST_TASKS, headers=headers).status_code == 200
        own.expire_tokens()
        assert http.get(LIST_TASKS, headers=headers).status_code == 401
        headers = {"X-Authentication-Token": login(http)}
        assert http.post("/_sandbox/expire-tokens").status_code == 200
        assert http.get(LIST_TASKS, headers=headers).status_code == 401


# ------------------------------------------------------------------------------------------- paging


@pytest.mark.parametrize("path", [LIST_IN, LIST_OUT, LIST_TASKS])
def test_pages_are_ordered_by_update_time_then_id_without_gaps(api: Api, path: str) -> None:
    items = api.all_items(path, page_rec=137)
    assert len(items) > 300
    assert [sort_key(i) for i in items] == sorted(sort_key(i) for i in items)
    assert len({i["id"] for i in items}) == len(items)


def test_page_size_is_capped_at_1000(api: Api) -> None:
    data = api.get(LIST_IN, pageNo=1, pageRec=5000)["data"]
    assert data["pageRec"] == 1000
    assert len(data["items"]) == 1000
    assert data["totalRecord"] > 1000


def test_lower_bound_on_update_time_is_inclusive(api: Api, all_incoming: list[dict[str, Any]]) -> None:
    pivot = all_incoming[len(all_incoming) // 2]
    bound = parse_dt(pivot["ngayCapNhat"])
    expected = [i["id"] for i in all_incoming if parse_dt(i["ngayCapNhat"]) >= bound]
    got = api.all_items(LIST_IN, page_rec=250, tuNgayCapNhat=pivot["ngayCapNhat"])
    assert [i["id"] for i in got] == expected
    assert got[0]["ngayCapNhat"] == pivot["ngayCapNhat"]
    later = api.get(LIST_IN, pageRec=1, tuNgayCapNhat=fmt_dt(bound + timedelta(seconds=1)))["data"]
    assert later["totalRecord"] == len([i for i in all_incoming if parse_dt(i["ngayCapNhat"]) > bound])


def test_agency_filter(api: Api, all_incoming: list[dict[str, Any]]) -> None:
    for agency in ("SKHCN", "VPUBND", "XA_COCSAN"):
        got = api.all_items(LIST_IN, maDonVi=agency)
        assert got
        assert all(i["maDonVi"] == agency for i in got)
        assert len(got) == sum(1 for i in all_incoming if i["maDonVi"] == agency)
    assert api.get(LIST_IN, maDonVi="KHONG_CO")["data"] == {"totalRecord": 0, "pageNo": 1, "pageRec": 100, "items": []}


def test_bad_parameters_are_400(client: httpx.Client) -> None:
    headers = {"X-Authentication-Token": login(client)}
    for params in ({"pageNo": "0"}, {"pageRec": "x"}, {"tuNgayCapNhat": "2026-09-01"}):
        response = client.get(LIST_IN, params=params, headers=headers)
        assert response.status_code == 400
        assert response.json()["status"]["code"] == "400"


# ------------------------------------------------------------------------------------------- content


def test_incoming_rows_have_the_documented_fields(all_incoming: list[dict[str, Any]]) -> None:
    fields = [
        "id",
        "soDen",
        "ngayDen",
        "soKyHieu",
        "ngayBanHanh",
        "coQuanBanHanh",
        "maDinhDanhCoQuanBanHanh",
        "loaiVanBan",
        "trichYeu",
        "doKhan",
        "maDonVi",
        "maPhongBan",
        "lanhDaoPhanCong",
        "nguoiChuTri",
        "nguoiPhoiHop",
        "hanXuLy",
        "ngayHoanThanh",
        "trangThai",
        "soLanTraLai",
        "ngayCapNhat",
        "nhatKy",
    ]
    names = {t.name for t in seed.DOCUMENT_TYPES} | {t.abbreviation for t in seed.DOCUMENT_TYPES} | {"CV"}
    ioffice_ids = {p.ioffice_id for p in seed.people()}
    for row in all_incoming:
        assert list(row) == fields
        assert row["loaiVanBan"] in names
        assert row["doKhan"] in seed.URGENCIES
        assert row["trangThai"] in ("CHO_XU_LY", "DANG_XU_LY", "DA_HOAN_THANH")
        assert "/" in row["soKyHieu"]
        assert {row["nguoiChuTri"], row["lanhDaoPhanCong"], *row["nguoiPhoiHop"]} - {None} <= ioffice_ids
    assert any(r["loaiVanBan"] == "CV" for r in all_incoming)  # the legacy abbreviation shows up


def test_activity_log_is_consistent_with_the_document(api: Api, all_incoming: list[dict[str, Any]]) -> None:
    returned = overdue = moved = 0
    for row in all_incoming:
        log = row["nhatKy"]
        assert log[0]["hanhDong"] == "TIEP_NHAN"
        assert [parse_dt(e["thoiGian"]) for e in log] == sorted(parse_dt(e["thoiGian"]) for e in log)
        assert row["ngayCapNhat"] == log[-1]["thoiGian"]
        assert row["soLanTraLai"] == sum(e["hanhDong"] == "TRA_LAI" for e in log)
        dues = [e["hanXuLy"] for e in log if e["hanXuLy"] is not None]
        assert row["hanXuLy"] == (dues[-1] if dues else None)
        finish = [e["thoiGian"] for e in log if e["hanhDong"] == "HOAN_THANH"]
        assert row["ngayHoanThanh"] == (finish[0] if finish else None)
        assert (row["trangThai"] == "DA_HOAN_THANH") == bool(finish)
        assigns = [e for e in log if e["hanhDong"] == "PHAN_CONG"]
        assert row["lanhDaoPhanCong"] == (assigns[0]["nguoiThucHien"] if assigns else None)
        returned += row["soLanTraLai"] > 0
        moved += any(e["hanhDong"] == "GIA_HAN" for e in log)
        if row["hanXuLy"]:
            done = parse_dt(row["ngayHoanThanh"]).date() if row["ngayHoanThanh"] else date(2026, 11, 1)
            overdue += done > parse_d(row["hanXuLy"])
    assert returned > 50
    assert moved > 20
    assert overdue > 50
    for row in all_incoming[::97]:
        assert api.get(f"/qlvb/api/van-ban-den/{row['id']}/nhat-ky")["data"] == row["nhatKy"]


def test_outgoing_log_and_number_symbol(api: Api) -> None:
    rows = api.all_items(LIST_OUT, kemNhatKy=1)
    for row in rows:
        log = row["nhatKy"]
        assert row["soLanTraLai"] == sum(e["hanhDong"] == "TRA_LAI" for e in log)
        assert row["ngayCapNhat"] == log[-1]["thoiGian"]
        issued = row["trangThai"] == "DA_HOAN_THANH"
        assert (row["soKyHieu"] is not None) == issued == (row["ngayBanHanh"] is not None)
        if issued:
            assert log[-1]["hanhDong"] == "HOAN_THANH"
            assert log[-1]["nguoiThucHien"] == row["nguoiKy"]
    symbols = [r["soKyHieu"] for r in rows if r["soKyHieu"]]
    assert len(set(symbols)) == len(symbols)
    assert any(s.endswith("/QĐ-SKHCN") for s in symbols) or any("/QĐ-" in s for s in symbols)


def test_unknown_document_is_a_404_envelope(api: Api, client: httpx.Client) -> None:
    response = client.get("/qlvb/api/van-ban-den/987654/nhat-ky", headers={"X-Authentication-Token": api.token})
    assert response.status_code == 404
    assert response.json() == {"status": {"code": "404", "message": "Không tìm thấy bản ghi"}, "data": None}


def test_same_seed_same_data_other_seed_other_data(state: EOfficeState) -> None:
    again = EOfficeState()
    assert again.rows("van-ban-den", page_rec=50, with_log=True) == state.rows(
        "van-ban-den", page_rec=50, with_log=True
    )
    other = EOfficeState(seed=7, days=10)
    assert other.rows("van-ban-den", page_rec=50) != state.rows("van-ban-den", page_rec=50)


# ------------------------------------------------------------------------------------------- bulk


def test_bulk_mode_pages_millions_with_flat_memory() -> None:
    count = 5_000_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        bulk_state = EOfficeState(bulk_records=count, days=5)
        base_size = len(bulk_state.ids("van-ban-den"))
        with serve_in_thread(create_eoffice_app(bulk_state)) as running, \
                httpx.Client(base_url=running.url, timeout=60) as http:
            api = Api(http)
            first = api.get(LIST_IN, pageNo=1, pageRec=1000)["data"]
            assert first["totalRecord"] == count + base_size
            assert [r["id"] for r in first["items"]] == list(range(100_000_000, 100_001_000))
            tracemalloc.reset_peak()
            settled = tracemalloc.get_traced_memory()[0]
            for page_no in (2, 2500, 4999, 5000):
                rows = api.get(LIST_IN, pageNo=page_no, pageRec=1000, kemNhatKy=1)["data"]["items"]
                assert [sort_key(r) for r in rows] == sorted(sort_key(r) for r in rows)
            peak = tracemalloc.get_traced_memory()[1]
            # the seam between the synthetic history and the base data keeps the order
            seam = api.get(LIST_IN, pageNo=5001, pageRec=1000)["data"]["items"]
            assert seam[0]["id"] < 100_000_000 <= api.get(LIST_IN, pageNo=5000, pageRec=1000)["data"]["items"][-1]["id"]
            # equal update times come in runs (more records than minutes in the year)
            stamps = [r["ngayCapNhat"] for r in first["items"]]
            assert len(set(stamps)) < len(stamps)
            # inclusive lower bound inside the bulk range
            bound = rows[0]["ngayCapNhat"]
            tail = api.get(LIST_IN, pageRec=5, tuNgayCapNhat=bound)["data"]
            assert tail["items"][0]["ngayCapNhat"] == bound
            before_bound = api.get(LIST_IN, pageRec=1, pageNo=count - tail["totalRecord"] + base_size)["data"]
            assert parse_dt(before_bound["items"][0]["ngayCapNhat"]) < parse_dt(bound)
            # agency filter is arithmetic too
            xa = api.get(LIST_IN, pageRec=3, maDonVi="XA_COCSAN")["data"]
            assert all(r["maDonVi"] == "XA_COCSAN" for r in xa["items"])
            # a bulk record's log is served like any other
            rid = rows[7]["id"]
            assert api.get(f"/qlvb/api/van-ban-den/{rid}/nhat-ky")["data"] == rows[7]["nhatKy"]
    finally:
        tracemalloc.stop()
    assert settled - before < 60_000_000  # the state holds nothing per bulk record
    assert peak - settled < 30_000_000  # serving pages anywhere in the range stays small


# ------------------------------------------------------------------------------------------- mutations


def test_advance_adds_and_changes_records_stamped_with_the_new_clock(fresh: tuple[EOfficeState, Api]) -> None:
    own, api = fresh
    previous = {r["id"]: r for r in api.all_items(LIST_IN)}
    high_water = max(parse_dt(r["ngayCapNhat"]) for r in previous.values())
    result = own.advance(days=1)
    assert result.clock == own.now
    assert result.added
    assert result.completed
    assert result.extended
    changed = {r["id"]: r for r in api.all_items(LIST_IN, tuNgayCapNhat=fmt_dt(high_water))}
    for doc_id in set(result.added + result.completed + result.extended) & set(own.ids("van-ban-den")):
        assert changed[doc_id]["ngayCapNhat"] == fmt_dt(result.clock)
    completed_in = [i for i in result.completed if i in previous]
    assert completed_in
    assert all(changed[i]["trangThai"] == "DA_HOAN_THANH" for i in completed_in)
    assert all(changed[i]["ngayHoanThanh"] == fmt_dt(result.clock) for i in completed_in)
    assert all(previous[i]["trangThai"] != "DA_HOAN_THANH" for i in completed_in)
    for doc_id in (i for i in result.extended if i in previous):
        log = api.get(f"/qlvb/api/van-ban-den/{doc_id}/nhat-ky")["data"]
        assert log[-1]["hanhDong"] == "GIA_HAN"
        assert log[-1]["hanXuLy"] == changed[doc_id]["hanXuLy"]
    tasks = api.all_items(LIST_TASKS, tuNgayCapNhat=fmt_dt(result.clock))
    assert {t["id"] for t in tasks} >= {i for i in result.added + result.completed if i in own.ids("cong-viec")}
    # the same seed advances the same way
    twin = EOfficeState()
    assert twin.advance(days=1) == result


def test_explicit_mutation_helpers(fresh: tuple[EOfficeState, Api]) -> None:
    own, api = fresh
    due = date(2026, 11, 6)
    doc_id = own.add_incoming("XA_COCSAN", doc_type="Tờ trình", subject="Đề nghị hỗ trợ kinh phí", due=due)
    row = api.get(f"/qlvb/api/van-ban-den/{doc_id}")["data"]
    assert row["maDonVi"] == "XA_COCSAN"
    assert row["loaiVanBan"] in ("Tờ trình", "TTr")
    assert row["trichYeu"] == "Đề nghị hỗ trợ kinh phí"
    assert row["hanXuLy"] == "06/11/2026"
    assert row["trangThai"] == "CHO_XU_LY"
    assert [e["hanhDong"] for e in row["nhatKy"]] == ["TIEP_NHAN", "PHAN_CONG"]
    own.advance(days=10)
    own.move_deadline(doc_id, date(2026, 11, 20))
    own.complete_late(doc_id)
    row = api.get(f"/qlvb/api/van-ban-den/{doc_id}")["data"]
    assert row["hanXuLy"] == "20/11/2026"
    assert row["trangThai"] == "DA_HOAN_THANH"
    assert row["ngayHoanThanh"] == row["ngayCapNhat"] == fmt_dt(own.now)
    assert [e["hanhDong"] for e in row["nhatKy"]][-3:] == ["GIA_HAN", "XU_LY", "HOAN_THANH"]
    with pytest.raises(ValueError, match="already finished"):
        own.complete_late(doc_id)
    with pytest.raises(KeyError):
        own.move_deadline(987654, due)


def test_sandbox_advance_over_http(fresh: tuple[EOfficeState, Api]) -> None:
    own, api = fresh
    before = own.now
    body = api.client.post("/_sandbox/advance", params={"days": 2}).json()
    assert body["status"]["code"] == "0"
    assert parse_dt(body["data"]["clock"]) == before + timedelta(days=2) == own.now


# ------------------------------------------------------------------------------------------- faults


def test_fail_next_answers_errors_with_retry_after_then_recovers(fresh: tuple[EOfficeState, Api]) -> None:
    own, api = fresh
    headers = {"X-Authentication-Token": api.token}
    own.fail_next(2, status=503, retry_after=1)
    for _ in range(2):
        response = api.client.get(LIST_TASKS, headers=headers)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert response.json()["status"]["code"] == "503"
    assert api.client.get(LIST_TASKS, headers=headers).status_code == 200
    api.client.post("/_sandbox/fail-next", json={"n": 1, "status": 429})
    assert api.client.post("/qlvb/api/login", json=CREDENTIALS).status_code == 429
    assert api.client.get(LIST_TASKS, headers=headers).status_code == 200


def test_malformed_next_page_breaks_exactly_one_body(fresh: tuple[EOfficeState, Api]) -> None:
    own, api = fresh
    headers = {"X-Authentication-Token": api.token}
    own.malformed_next_page()
    broken = api.client.get(LIST_IN, headers=headers)
    assert broken.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(broken.content)
    assert api.client.get(LIST_IN, headers=headers).json()["status"]["code"] == "0"


# ------------------------------------------------------------------------------------------- server


def test_serve_in_thread_stops_and_releases_the_port() -> None:
    own = EOfficeState(days=3)
    running = serve_in_thread(create_eoffice_app(own))
    assert running.url == f"http://127.0.0.1:{running.port}"
    with httpx.Client(base_url=running.url) as http:
        assert http.get("/_sandbox/clock").json()["data"]["now"] == "04/09/2026 08:00:00"
    running.stop()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", running.port)) != 0


# ------------------------------------------------------------------------------------------- seed


def test_seed_agencies_units_and_people() -> None:
    agencies = {a.code: a for a in seed.agencies()}
    assert agencies["SKHCN"].organ_id == "000.00.12.H37"
    assert agencies["VPUBND"].organ_id == "000.00.01.H37"
    assert agencies["XA_COCSAN"].organ_id == "000.20.31.H37"
    for code in agencies:
        assert 2 <= len(seed.units_of(code)) <= 4
    people = seed.people()
    assert 90 <= len(people) <= 110
    by_id = {p.person_id: p for p in people}
    for attr in ("person_id", "ioffice_id", "onestop_user", "full_name"):
        assert len({getattr(p, attr) for p in people}) == len(people), attr
    for p in people:
        assert p.unit in {u.code for u in seed.units_of(p.agency)}
        if p.reports_to is None:
            assert p.is_leader
        else:
            boss = by_id[p.reports_to]
            assert boss.is_leader
            assert boss.agency == p.agency
        assert p.full_name in p.edxml_staff
        assert p.onestop_user.isascii()
    assert sum(p.reports_to is None for p in people) == len(agencies)


def test_decree_30_document_types() -> None:
    types = {t.name: t.abbreviation for t in seed.DOCUMENT_TYPES}
    assert len(seed.DOCUMENT_TYPES) == len(types) == 29
    assert types["Quyết định"] == "QĐ"
    assert types["Quy định"] == "QyĐ"
    assert types["Hợp đồng"] == "HĐ"
    assert types["Hướng dẫn"] == "HD"
    assert types["Đề án"] == "ĐA"
    assert types["Dự án"] == "DA"
    assert types["Tờ trình"] == "TTr"
    assert types["Công văn"] is None
    assert types["Thư công"] is None
    assert seed.LEGACY_ABBREVIATIONS["Công văn"] == "CV"


def test_committed_people_csv_matches_the_seed(tmp_path: Path) -> None:
    generated = seed.write_people_directory(tmp_path / "people.csv")
    assert (REPO / "mappings" / "people.csv").read_bytes() == generated.read_bytes(), (
        "mappings/people.csv is stale: regenerate it with "
        "python -c 'from gateway.standins.seed import write_people_directory as w; w(\"mappings/people.csv\")'"
    )
