"""Decree 30/2020 document types: canonical names, abbreviations and the legacy spellings sources send.

Rules match on the canonical type name (``Quyết định``), so a rule written once covers a source that sends the
abbreviation (``QĐ``), a legacy invention (``CV`` for Công văn) or odd casing and spacing. Diacritics matter:
``HĐ`` (Hợp đồng) is not ``HD`` (Hướng dẫn), ``ĐA`` is not ``DA``, ``QĐ`` is not ``QyĐ``.
"""

from __future__ import annotations

import unicodedata

DECREE_30_TYPES: dict[str, str] = {
    "Nghị quyết": "NQ",
    "Quyết định": "QĐ",
    "Chỉ thị": "CT",
    "Quy chế": "QC",
    "Quy định": "QyĐ",
    "Thông cáo": "TC",
    "Thông báo": "TB",
    "Hướng dẫn": "HD",
    "Chương trình": "CTr",
    "Kế hoạch": "KH",
    "Phương án": "PA",
    "Đề án": "ĐA",
    "Dự án": "DA",
    "Báo cáo": "BC",
    "Biên bản": "BB",
    "Tờ trình": "TTr",
    "Hợp đồng": "HĐ",
    "Công văn": "",
    "Công điện": "CĐ",
    "Bản ghi nhớ": "BGN",
    "Bản thỏa thuận": "BTT",
    "Giấy ủy quyền": "GUQ",
    "Giấy mời": "GM",
    "Giấy giới thiệu": "GGT",
    "Giấy nghỉ phép": "GNP",
    "Phiếu gửi": "PG",
    "Phiếu chuyển": "PC",
    "Phiếu báo": "PB",
    "Thư công": "",
}
"""The 29 types of Decree 30/2020 and their abbreviations (two have none)."""

_LEGACY: dict[str, str] = {
    "CV": "Công văn",
    "CVAN": "Công văn",
    "QD": "Quyết định",  # legacy systems without Vietnamese letters; "QD" is not used by any other type
    "TTR": "Tờ trình",
    "Thông tư": "Thông tư",  # a ministry's legal document, outside the 29 administrative types
}


def _fold(text: str) -> str:
    # NFC first: sources mix precomposed and combining diacritics; casefold keeps Đ distinct from D.
    return " ".join(unicodedata.normalize("NFC", text).split()).casefold()


_BY_FOLDED: dict[str, str] = {}
for _name, _abbr in DECREE_30_TYPES.items():
    _BY_FOLDED[_fold(_name)] = _name
for _name, _abbr in DECREE_30_TYPES.items():
    if _abbr:
        _BY_FOLDED.setdefault(_fold(_abbr), _name)
# "Qđ"/"qđ" fold to the same key as "QĐ"; "Qyđ" to "QyĐ". Case-insensitive but diacritic-sensitive.
for _legacy, _name in _LEGACY.items():
    _BY_FOLDED.setdefault(_fold(_legacy), _name)


def canonical_doc_type(raw: str | None) -> str | None:
    """The canonical Decree-30 name for a type name or abbreviation; unknown names come back NFC-trimmed."""
    if raw is None:
        return None
    folded = _fold(raw)
    if not folded:
        return None
    known = _BY_FOLDED.get(folded)
    if known is not None:
        return known
    return " ".join(unicodedata.normalize("NFC", raw).split())


def abbreviation(name: str | None) -> str:
    """The Decree-30 abbreviation of a canonical type name ('' for none or unknown)."""
    return DECREE_30_TYPES.get(name or "", "")


def issuer_of(number_symbol: str | None) -> str:
    """The issuing organ's part of a number-symbol: ``156/QĐ-UBND`` -> ``UBND``; '' when absent."""
    if not number_symbol or "/" not in number_symbol:
        return ""
    _, _, notation = number_symbol.partition("/")
    _, dash, organ = notation.partition("-")
    return unicodedata.normalize("NFC", organ.strip()) if dash else ""


__all__ = ["DECREE_30_TYPES", "abbreviation", "canonical_doc_type", "issuer_of"]
