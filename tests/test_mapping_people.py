"""The people directory: exact ids, edXML names folded, reporting lines, and errors that name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.mapping.people import parse_people

HEADER = "person_id,full_name,agency,unit,job_position,is_leader,reports_to,ioffice_id,onestop_user,edxml_staff\n"


def test_resolution_per_system() -> None:
    d = parse_people(
        HEADER
        + "P1,Lãnh Đạo,A,BGD,Giám đốc,true,,u1,ld1,Lãnh Đạo\n"
        + "P2,Trưởng Phòng,A,P1,Trưởng phòng,yes,P1,u2,,\n"
        + "P3,Nguyễn Văn Ba,A,P1,Chuyên viên,false,P2,u3;u3-old,ba.nv,Nguyễn Văn Ba\n",
        path=Path("people.csv"),
    )
    assert d.resolve("ioffice", "u3-old").person_id == "P3"  # type: ignore[union-attr]
    assert d.resolve("onestop", "ba.nv").person_id == "P3"  # type: ignore[union-attr]
    assert d.resolve("edxml", "  nguyễn  văn BA ").person_id == "P3"  # type: ignore[union-attr]
    assert d.resolve("ioffice", "U3") is None  # ids are exact; no guessing
    assert d.resolve("lgsp", "u3") is None
    assert d.leader_of("P3").person_id == "P2"  # type: ignore[union-attr]
    assert d.leader_of("P1") is None
    assert d.version.startswith("p-")


def test_every_problem_with_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_people(
            HEADER
            + "P1,A,A,U,J,maybe,,u1,,\n"
            + "P2,B,A,U,J,false,P9,u1,,\n"
            + "P1,C,A,U,J,false,,u5,,\n",
            path=Path("people.csv"),
        )
    message = str(info.value)
    assert "people.csv:2:6: is_leader: 'maybe'" in message
    assert "people.csv:3:8: ioffice_id: 'u1' is already P1's" in message
    assert "people.csv:4:1: person_id: P1 appears twice" in message
    assert "P2 reports to unknown P9" in message


def test_missing_columns() -> None:
    with pytest.raises(ConfigError, match="missing columns: unit"):
        parse_people("person_id,full_name,agency,job_position,is_leader,reports_to\n", path=Path("p.csv"))
