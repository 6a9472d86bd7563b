"""Deterministic seed data shared by every stand-in: agencies, units, people and Decree 30 document types.

Everything here is a pure function of constants (no randomness that depends on the run, no I/O unless
asked): the e-office, eDoc hub and one-stop stand-ins all see the same civil servants under their
per-system ids (``ioffice_id``, ``onestop_user``, ``edxml_staff``), and ``mappings/people.csv`` is the HR
export that the gateway resolves those ids through.
"""

from __future__ import annotations

import csv
import random
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PEOPLE_SEED = 20260901
"""Seed of the name generator; changing it rewrites ``mappings/people.csv``."""

PEOPLE_CSV_HEADER = (
    "person_id",
    "full_name",
    "agency",
    "unit",
    "job_position",
    "is_leader",
    "reports_to",
    "ioffice_id",
    "onestop_user",
    "edxml_staff",
)


@dataclass(frozen=True, slots=True)
class Agency:
    code: str  # gateway agency code, e.g. "SKHCN"
    name: str
    organ_id: str  # edXML OrganId (mã định danh điện tử), e.g. "000.00.12.H37"
    symbol: str  # the organ part of a number-symbol, e.g. "SKHCN" in "156/QĐ-SKHCN"
    login_suffix: str  # suffix of one-stop user names, e.g. "skhcn"


@dataclass(frozen=True, slots=True)
class Unit:
    code: str  # globally unique, e.g. "SKHCN-VP"
    name: str
    agency: str  # Agency.code
    symbol: str  # the unit part of a Công văn number-symbol, e.g. "VP" in "412/SKHCN-VP"
    is_leadership: bool = False  # Ban Giám đốc / Lãnh đạo: where the agency's leaders sit


@dataclass(frozen=True, slots=True)
class Person:
    person_id: str
    full_name: str
    agency: str
    unit: str
    job_position: str
    is_leader: bool
    reports_to: str | None
    ioffice_id: str
    onestop_user: str
    edxml_staff: str


@dataclass(frozen=True, slots=True)
class DocumentType:
    """A Decree 30/2020 document type; ``abbreviation`` is None for Công văn and Thư công."""

    name: str
    abbreviation: str | None


DOCUMENT_TYPES: tuple[DocumentType, ...] = (
    DocumentType("Nghị quyết", "NQ"),
    DocumentType("Quyết định", "QĐ"),
    DocumentType("Chỉ thị", "CT"),
    DocumentType("Quy chế", "QC"),
    DocumentType("Quy định", "QyĐ"),
    DocumentType("Thông cáo", "TC"),
    DocumentType("Thông báo", "TB"),
    DocumentType("Hướng dẫn", "HD"),
    DocumentType("Chương trình", "CTr"),
    DocumentType("Kế hoạch", "KH"),
    DocumentType("Phương án", "PA"),
    DocumentType("Đề án", "ĐA"),
    DocumentType("Dự án", "DA"),
    DocumentType("Báo cáo", "BC"),
    DocumentType("Biên bản", "BB"),
    DocumentType("Tờ trình", "TTr"),
    DocumentType("Hợp đồng", "HĐ"),
    DocumentType("Công văn", None),
    DocumentType("Công điện", "CĐ"),
    DocumentType("Bản ghi nhớ", "BGN"),
    DocumentType("Bản thỏa thuận", "BTT"),
    DocumentType("Giấy ủy quyền", "GUQ"),
    DocumentType("Giấy mời", "GM"),
    DocumentType("Giấy giới thiệu", "GGT"),
    DocumentType("Giấy nghỉ phép", "GNP"),
    DocumentType("Phiếu gửi", "PG"),
    DocumentType("Phiếu chuyển", "PC"),
    DocumentType("Phiếu báo", "PB"),
    DocumentType("Thư công", None),
)
"""The 29 types of Decree 30/2020/NĐ-CP, Appendix III, in the decree's order."""

LEGACY_ABBREVIATIONS: dict[str, str] = {"Công văn": "CV"}
"""Abbreviations legacy systems invent where the decree has none."""

URGENCIES: tuple[str, ...] = ("thường", "khẩn", "thượng khẩn", "hỏa tốc")

_AGENCIES: tuple[Agency, ...] = (
    Agency("SKHCN", "Sở Khoa học và Công nghệ tỉnh Lào Cai", "000.00.12.H37", "SKHCN", "skhcn"),
    Agency("VPUBND", "Văn phòng UBND tỉnh Lào Cai", "000.00.01.H37", "VPUBND", "vpubnd"),
    Agency("XA_COCSAN", "UBND xã Cốc San", "000.20.31.H37", "UBND", "cocsan"),
)

_UNITS: tuple[Unit, ...] = (
    Unit("SKHCN-BGD", "Ban Giám đốc Sở", "SKHCN", "BGĐ", is_leadership=True),
    Unit("SKHCN-VP", "Văn phòng Sở", "SKHCN", "VP"),
    Unit("SKHCN-QLKH", "Phòng Quản lý khoa học", "SKHCN", "QLKH"),
    Unit("SKHCN-QLCN", "Phòng Quản lý công nghệ và Sở hữu trí tuệ", "SKHCN", "QLCN"),
    Unit("VPUBND-LD", "Lãnh đạo Văn phòng", "VPUBND", "LĐVP", is_leadership=True),
    Unit("VPUBND-TH", "Phòng Tổng hợp", "VPUBND", "TH"),
    Unit("VPUBND-KT", "Phòng Kinh tế", "VPUBND", "KT"),
    Unit("VPUBND-HCTC", "Phòng Hành chính - Tổ chức", "VPUBND", "HCTC"),
    Unit("XA_COCSAN-LD", "Lãnh đạo UBND xã", "XA_COCSAN", "LĐ", is_leadership=True),
    Unit("XA_COCSAN-VP", "Văn phòng HĐND và UBND xã", "XA_COCSAN", "VP"),
    Unit("XA_COCSAN-KT", "Phòng Kinh tế", "XA_COCSAN", "KT"),
    Unit("XA_COCSAN-HCC", "Trung tâm Phục vụ hành chính công xã", "XA_COCSAN", "TTPVHCC"),
)

# Leadership titles per agency: (head, deputy).
_LEADER_TITLES: dict[str, tuple[str, str]] = {
    "SKHCN": ("Giám đốc", "Phó Giám đốc"),
    "VPUBND": ("Chánh Văn phòng", "Phó Chánh Văn phòng"),
    "XA_COCSAN": ("Chủ tịch UBND xã", "Phó Chủ tịch UBND xã"),
}

# Per non-leadership unit: (head title, deputy title, staff count, staff positions).
_UNIT_STAFF: dict[str, tuple[str, str, int, tuple[str, ...]]] = {
    "SKHCN-VP": (
        "Chánh Văn phòng Sở",
        "Phó Chánh Văn phòng Sở",
        7,
        ("Văn thư", "Kế toán", "Chuyên viên tổng hợp", "Chuyên viên tổ chức cán bộ", "Chuyên viên pháp chế"),
    ),
    "SKHCN-QLKH": (
        "Trưởng phòng",
        "Phó Trưởng phòng",
        9,
        ("Chuyên viên quản lý khoa học", "Chuyên viên quản lý nhiệm vụ khoa học và công nghệ"),
    ),
    "SKHCN-QLCN": (
        "Trưởng phòng",
        "Phó Trưởng phòng",
        9,
        ("Chuyên viên quản lý công nghệ", "Chuyên viên sở hữu trí tuệ", "Chuyên viên chuyển đổi số"),
    ),
    "VPUBND-TH": (
        "Trưởng phòng",
        "Phó Trưởng phòng",
        9,
        ("Chuyên viên tổng hợp", "Chuyên viên theo dõi nội chính"),
    ),
    "VPUBND-KT": (
        "Trưởng phòng",
        "Phó Trưởng phòng",
        9,
        ("Chuyên viên kinh tế ngành", "Chuyên viên nông nghiệp", "Chuyên viên tài nguyên - môi trường"),
    ),
    "VPUBND-HCTC": (
        "Trưởng phòng",
        "Phó Trưởng phòng",
        8,
        ("Văn thư", "Lưu trữ viên", "Kế toán", "Chuyên viên tổ chức - hành chính"),
    ),
    "XA_COCSAN-VP": (
        "Chánh Văn phòng",
        "Phó Chánh Văn phòng",
        7,
        ("Văn thư", "Công chức Văn phòng - Thống kê", "Công chức Tư pháp - Hộ tịch", "Kế toán"),
    ),
    "XA_COCSAN-KT": (
        "Trưởng phòng",
        "Phó Trưởng phòng",
        7,
        ("Công chức Địa chính - Xây dựng", "Công chức Nông nghiệp - Môi trường", "Công chức Tài chính"),
    ),
    "XA_COCSAN-HCC": (
        "Giám đốc Trung tâm",
        "Phó Giám đốc Trung tâm",
        6,
        ("Công chức tiếp nhận và trả kết quả", "Công chức một cửa"),
    ),
}

_FAMILY_NAMES = (
    "Nguyễn:30 Trần:10 Lê:9 Phạm:7 Hoàng:6 Vũ:5 Đặng:3 Bùi:3 Đỗ:3 Hồ:2 Ngô:2 Dương:2 Lý:2 Phan:2 Đinh:2"
    " Lương:2 Giàng:2 Sùng:1 Lù:1 Thào:1 Vàng:1 Lò:1 Hà:2"
)  # family name:weight, Kinh and the Hmông, Dao, Tày, Giáy families of Lào Cai
_MALE_MIDDLE = "Văn Đức Minh Quang Hữu Xuân Mạnh Tiến Thanh Công"
_FEMALE_MIDDLE = "Thị|Thu|Thanh|Ngọc|Thùy|Minh|Hồng|Thị Thu|Phương"
_MALE_GIVEN = (
    "An Bình Cường Dũng Đạt Hải Hiếu Hoàng Hùng Huy Khánh Long Nam Phong Phúc Quân Sơn Thắng Thành Trung"
    " Tuấn Việt Vinh Khải Chiến Lâm Tùng Kiên"
)
_FEMALE_GIVEN = (
    "Anh Chi Dung Giang Hà Hạnh Hằng Hoa Hương Lan Liên Linh Loan Mai Ngân Nhung Oanh Phượng Quyên Thảo"
    " Thủy Trang Tuyết Vân Yến Huyền Ly"
)


def agencies() -> tuple[Agency, ...]:
    return _AGENCIES


def agency(code: str) -> Agency:
    for item in _AGENCIES:
        if item.code == code:
            return item
    raise KeyError(code)


def units() -> tuple[Unit, ...]:
    return _UNITS


def units_of(agency_code: str) -> tuple[Unit, ...]:
    return tuple(unit for unit in _UNITS if unit.agency == agency_code)


def document_type(name: str) -> DocumentType:
    for item in DOCUMENT_TYPES:
        if item.name == name:
            return item
    raise KeyError(name)


def fold_ascii(text: str) -> str:
    """Strip Vietnamese diacritics: ``"Nguyễn Văn Đạt"`` -> ``"Nguyen Van Dat"``."""
    text = text.replace("Đ", "D").replace("đ", "d")
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@cache
def people() -> tuple[Person, ...]:
    """About 100 civil servants, deterministic; computed once on first call (never at import)."""
    return tuple(_build_people())


def _build_people() -> list[Person]:
    rng = random.Random(PEOPLE_SEED)
    used_names: set[str] = set()
    used_logins: set[str] = set()
    result: list[Person] = []

    def new_person(agency_code: str, unit_code: str, position: str, *, leader: bool, boss: str | None) -> str:
        index = len(result) + 1
        full_name = _fresh_name(rng, used_names)
        login = _login(full_name, agency(agency_code).login_suffix, used_logins)
        result.append(
            Person(
                person_id=f"P{index:04d}",
                full_name=full_name,
                agency=agency_code,
                unit=unit_code,
                job_position=position,
                is_leader=leader,
                reports_to=boss,
                ioffice_id=f"u{1000 + index}",
                onestop_user=login,
                edxml_staff=_edxml_staff(rng, full_name, position if leader else _staff_title(agency_code)),
            )
        )
        return result[-1].person_id

    for ag in _AGENCIES:
        head_title, deputy_title = _LEADER_TITLES[ag.code]
        leadership = next(u for u in units_of(ag.code) if u.is_leadership)
        head = new_person(ag.code, leadership.code, head_title, leader=True, boss=None)
        deputies = [new_person(ag.code, leadership.code, deputy_title, leader=True, boss=head) for _ in range(2)]
        for n, unit in enumerate(u for u in units_of(ag.code) if not u.is_leadership):
            unit_head_title, unit_deputy_title, staff_count, positions = _UNIT_STAFF[unit.code]
            in_charge = deputies[n % len(deputies)]
            unit_head = new_person(ag.code, unit.code, unit_head_title, leader=True, boss=in_charge)
            new_person(ag.code, unit.code, unit_deputy_title, leader=True, boss=unit_head)
            for k in range(staff_count):
                new_person(ag.code, unit.code, positions[k % len(positions)], leader=False, boss=unit_head)
    return result


def _fresh_name(rng: random.Random, used: set[str]) -> str:
    pairs = [item.split(":") for item in _FAMILY_NAMES.split()]
    families = [name for name, _ in pairs]
    weights = [int(weight) for _, weight in pairs]
    male = (_MALE_MIDDLE.split(), _MALE_GIVEN.split())
    female = (_FEMALE_MIDDLE.split("|"), _FEMALE_GIVEN.split())
    while True:
        family = rng.choices(families, weights)[0]
        middles, givens = male if rng.random() < 0.5 else female
        name = f"{family} {rng.choice(middles)} {rng.choice(givens)}"
        if name not in used:
            used.add(name)
            return name


def _login(full_name: str, suffix: str, used: set[str]) -> str:
    base = fold_ascii(full_name).lower().replace(" ", "")
    candidate = f"{base}.{suffix}"
    n = 1
    while candidate in used:
        n += 1
        candidate = f"{base}{n}.{suffix}"
    used.add(candidate)
    return candidate


def _staff_title(agency_code: str) -> str:
    return "Công chức" if agency_code.startswith("XA_") else "Chuyên viên"


def _edxml_staff(rng: random.Random, full_name: str, title: str) -> str:
    """Free text as edXML ``StaffInfo.Staff`` carries it: usually the bare name, sometimes decorated."""
    roll = rng.random()
    if roll < 0.7:
        return full_name
    if roll < 0.85:
        return f"{title} {full_name}"
    return f"Đ/c {full_name}"


def write_people_directory(path: str | Path) -> Path:
    """Write the HR export CSV (UTF-8, ``\\n`` line ends) that the gateway's people directory reads."""
    target = Path(path)
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(PEOPLE_CSV_HEADER)
        for p in people():
            writer.writerow(
                (
                    p.person_id,
                    p.full_name,
                    p.agency,
                    p.unit,
                    p.job_position,
                    "true" if p.is_leader else "false",
                    p.reports_to or "",
                    p.ioffice_id,
                    p.onestop_user,
                    p.edxml_staff,
                )
            )
    return target
