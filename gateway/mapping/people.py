"""The people directory: each source system's user ids resolved to one person, from the HR export.

``mappings/people.csv`` has one row per civil servant::

    person_id,full_name,agency,unit,job_position,is_leader,reports_to,ioffice_id,onestop_user,edxml_staff

A work item's ``id_system`` names the column its participants' user ids belong to (:data:`ID_COLUMNS`). Ids
are matched exactly, except edXML's free-text ``StaffInfo.Staff`` names, which are matched after Unicode NFC,
whitespace and case folding. An id the directory does not know is reported, never guessed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError
from gateway.yamlconf import not_utf8

ID_COLUMNS: Mapping[str, str] = {"ioffice": "ioffice_id", "onestop": "onestop_user", "edxml": "edxml_staff"}
REQUIRED_COLUMNS = ("person_id", "full_name", "agency", "unit", "job_position", "is_leader", "reports_to")
_TRUE = frozenset({"1", "true", "yes", "x", "có", "co", "y"})
_FALSE = frozenset({"", "0", "false", "no", "không", "khong", "n"})


@dataclass(frozen=True, slots=True)
class Person:
    person_id: str
    full_name: str
    agency: str
    unit: str | None
    job_position: str | None
    is_leader: bool
    reports_to: str | None


def _fold_name(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split()).casefold()


def _key(system: str, user_id: str) -> str:
    return _fold_name(user_id) if system == "edxml" else user_id.strip()


class PeopleDirectory:
    """Immutable lookups ``(system, user_id) -> Person``; ``version`` is a digest of the file's content."""

    __slots__ = ("_by_id", "_by_system", "path", "version")

    def __init__(self, people: Iterable[Person], ids: Mapping[str, Mapping[str, str]], *, version: str,
                 path: Path | None = None) -> None:  # fmt: skip
        self._by_id: dict[str, Person] = {p.person_id: p for p in people}
        self._by_system: dict[str, dict[str, Person]] = {
            system: {_key(system, uid): self._by_id[pid] for uid, pid in table.items()}
            for system, table in ids.items()
        }
        self.version = version
        self.path = path

    def resolve(self, system: str, user_id: str) -> Person | None:
        table = self._by_system.get(system)
        if table is None:
            return None
        found = table.get(user_id)
        return found if found is not None else table.get(_key(system, user_id))

    def person(self, person_id: str) -> Person | None:
        return self._by_id.get(person_id)

    def leader_of(self, person_id: str) -> Person | None:
        """The nearest leader up the reporting line (the person's own ``reports_to`` chain), if any."""
        seen = {person_id}
        current = self._by_id.get(person_id)
        while current is not None and current.reports_to and current.reports_to not in seen:
            seen.add(current.reports_to)
            current = self._by_id.get(current.reports_to)
            if current is not None and current.is_leader:
                return current
        return None

    def __len__(self) -> int:
        return len(self._by_id)

    def systems(self) -> tuple[str, ...]:
        return tuple(self._by_system)

    @classmethod
    def empty(cls) -> PeopleDirectory:
        return cls((), {system: {} for system in ID_COLUMNS}, version="p-empty")


def parse_people(text: str, *, path: Path) -> PeopleDirectory:
    """Parse the HR export; every problem (missing column, duplicate id, dangling reports_to) in one error."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = reader.fieldnames or []
    missing = [c for c in (*REQUIRED_COLUMNS, "person_id") if c not in header]
    if missing:
        raise ConfigError(f"{path}:1:1: missing columns: {', '.join(dict.fromkeys(missing))}")
    id_columns = {system: col for system, col in ID_COLUMNS.items() if col in header}
    problems: list[str] = []
    people: list[Person] = []
    ids: dict[str, dict[str, str]] = {system: {} for system in ID_COLUMNS}
    seen: set[str] = set()
    lines: dict[str, int] = {}  # person_id -> its line, to name the line of a problem found after the last row
    for row in reader:
        line = reader.line_num
        if not any(isinstance(v, str) and v.strip() for v in row.values()):
            continue  # a spreadsheet's empty row, saved as a line of commas: a blank line, not a person
        pid = (row.get("person_id") or "").strip()
        if not pid:
            problems.append(f"{path}:{line}:1: person_id: empty")
            continue
        if pid in seen:
            problems.append(f"{path}:{line}:1: person_id: {pid} appears twice")
            continue
        seen.add(pid)
        lines[pid] = line
        flag = (row.get("is_leader") or "").strip().casefold()
        if flag not in _TRUE and flag not in _FALSE:
            col = header.index("is_leader") + 1
            problems.append(f"{path}:{line}:{col}: is_leader: {flag!r} is not a yes/no value")
        people.append(Person(
            person_id=pid, full_name=(row.get("full_name") or "").strip(), agency=(row.get("agency") or "").strip(),
            unit=(row.get("unit") or "").strip() or None, job_position=(row.get("job_position") or "").strip() or None,
            is_leader=flag in _TRUE, reports_to=(row.get("reports_to") or "").strip() or None,
        ))  # fmt: skip
        for system, id_col in id_columns.items():
            # One person may hold several ids in a system, separated by ';' (e.g. a renamed account).
            for part in (row.get(id_col) or "").split(";"):
                uid = part.strip()
                if not uid:
                    continue
                key = _key(system, uid)
                other = ids[system].get(key)
                if other is not None and other != pid:
                    problems.append(
                        f"{path}:{line}:{header.index(id_col) + 1}: {id_col}: {uid!r} is already {other}'s"
                    )
                ids[system][key] = pid
    for person in people:
        if person.reports_to and person.reports_to not in seen:
            problems.append(f"{path}:{lines[person.person_id]}:{header.index('reports_to') + 1}: reports_to: "
                            f"{person.person_id} reports to unknown {person.reports_to}")
    if problems:
        raise ConfigError("\n".join(problems))
    digest = hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
    return PeopleDirectory(people, ids, version=f"p-{digest}", path=path)


def load_people(path: Path) -> PeopleDirectory:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the people directory: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from exc
    return parse_people(text, path=path)


__all__ = ["ID_COLUMNS", "PeopleDirectory", "Person", "load_people", "parse_people"]
