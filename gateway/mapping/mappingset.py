"""Loading the whole ``mappings/`` directory into one immutable, compiled :class:`MappingSet`.

Layout::

    mappings/
      catalogs/<AGENCY>/<version>.yaml   product catalogs, versioned with effective dates
      rules/*.yaml (any depth)           rules, per agency or common ("*"), with examples
      policy.yaml                        scoring policy: default + per-agency overrides
      exemptions.yaml                    confirmed objective-cause exemptions (optional)
      people.csv                         people directory exported by HR

Every problem in every file is collected and raised as one :class:`~gateway.errors.ConfigError`, each line
naming ``file:line:column: key: what is wrong``. A failed load returns nothing, so the caller keeps the
``MappingSet`` it had (see :class:`MappingHolder`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.mapping.catalog import Catalog, CatalogHistory, load_catalogs
from gateway.mapping.people import PeopleDirectory, load_people
from gateway.mapping.policy import Exemption, ScoringPolicy, load_exemptions, load_policies
from gateway.mapping.rules import CompiledRule, LoadedRuleFile, parse_rule_file, rules_for
from gateway.mapping.valuation import Valuation, value_item
from gateway.types import WorkItem
from gateway.yamlconf import load_yaml


class MappingSet:
    """Catalogs, rules, policies and the people directory, compiled once; safe to share between threads."""

    def __init__(self, *, version: str, directory: PeopleDirectory, catalogs: Mapping[str, CatalogHistory],
                 rule_files: tuple[LoadedRuleFile, ...], default_policy: ScoringPolicy,
                 policies: Mapping[str, ScoringPolicy], exemptions: Mapping[tuple[str, str], tuple[Exemption, ...]],
                 root: Path | None = None, files: tuple[Path, ...] = (), warnings: tuple[str, ...] = (),
                 content_digest: str | None = None) -> None:  # fmt: skip
        self.version = version
        # ``version`` is short (it is in every fact's lineage); this one is long enough to trust for identity: a
        # page-preparing worker loads the directory and compares it (gateway/sync/prepare.py).
        self.content_digest = content_digest
        self.directory = directory
        self.catalogs = dict(catalogs)
        self.rule_files = rule_files
        self.default_policy = default_policy
        self.policies = dict(policies)
        self.exemptions = dict(exemptions)
        self.root = root
        self.files = files
        self.warnings = warnings
        agencies = set(self.catalogs) | set(self.policies) | {f.spec.agency for f in rule_files} - {"*"}
        self._rules: dict[str, tuple[CompiledRule, ...]] = {a: rules_for(a, rule_files) for a in agencies}
        self._common = rules_for("*", rule_files)
        self._catalog_cache: dict[tuple[str, date], Catalog | None] = {}
        self._catalog_lineage: dict[int, dict[str, Any]] = {}
        self._summaries: dict[str, dict[str, Any]] = {}

    def with_directory(self, directory: PeopleDirectory) -> MappingSet:
        """The same mappings resolving people through another directory (rule-file examples use this)."""
        return MappingSet(
            version=self.version, directory=directory, catalogs=self.catalogs, rule_files=self.rule_files,
            default_policy=self.default_policy, policies=self.policies, exemptions=self.exemptions,
            root=self.root, files=self.files, warnings=self.warnings,
        )  # fmt: skip

    @property
    def agencies(self) -> tuple[str, ...]:
        return tuple(sorted(self._rules))

    def rules_for(self, agency: str) -> tuple[CompiledRule, ...]:
        found = self._rules.get(agency)
        return self._common if found is None else found

    def rule(self, agency: str, rule_id: str) -> CompiledRule | None:
        return next((r for r in self.rules_for(agency) if r.id == rule_id), None)

    def value(self, item: WorkItem, *, raw: Mapping[str, str]) -> Valuation:
        """The facts this work item earns, and the problems met; never raises for data problems."""
        return value_item(self, item, raw)

    def policy_for(self, agency: str) -> ScoringPolicy:
        return self.policies.get(agency, self.default_policy)

    def policy_summary(self, agency: str) -> dict[str, Any]:
        found = self._summaries.get(agency)
        if found is None:
            found = self._summaries[agency] = self.policy_for(agency).summary()
        return found

    def catalog_for(self, agency: str, on: date) -> Catalog | None:
        key = (agency, on)
        try:
            return self._catalog_cache[key]
        except KeyError:
            history = self.catalogs.get(agency)
            found = self._catalog_cache[key] = history.on(on) if history is not None else None
            return found

    def catalog_lineage(self, catalog: Catalog) -> dict[str, Any]:
        found = self._catalog_lineage.get(id(catalog))
        if found is None:
            found = self._catalog_lineage[id(catalog)] = {
                "agency": catalog.agency, "version": catalog.version,
                "effective_from": catalog.effective_from.isoformat(),
            }  # fmt: skip
        return found


def _digest(root: Path, files: list[Path], *, size: int = 4) -> str:
    h = hashlib.blake2b(digest_size=size)
    for path in sorted(files):
        h.update(str(path.relative_to(root)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return f"m-{h.hexdigest()}"


def _cross_check(catalogs: Mapping[str, CatalogHistory], rule_files: tuple[LoadedRuleFile, ...]
                 ) -> tuple[list[str], list[str]]:  # fmt: skip
    """Rules naming products their agency's catalogs lack: errors if in no version, warnings if in some."""
    errors: list[str] = []
    warnings: list[str] = []
    for loaded in rule_files:
        agencies = [loaded.spec.agency] if loaded.spec.agency != "*" else sorted(catalogs)
        for rule in loaded.rules:
            for agency in agencies:
                if loaded.spec.agency == "*" and rule not in rules_for(agency, rule_files):
                    continue
                history = catalogs.get(agency)
                if history is None:
                    if rule.products() and loaded.spec.agency != "*":
                        warnings.append(f"{loaded.path}:{rule.line}:1: rule {rule.id}: agency {agency} has no "
                                        "catalog yet")  # fmt: skip
                    continue
                for code in sorted(rule.products()):
                    missing = [c.version for c in history.versions if code not in c.products]
                    if len(missing) == len(history.versions):
                        errors.append(f"{loaded.path}:{rule.line}:1: rule {rule.id}: product {code} is in no "
                                      f"catalog version of {agency}")  # fmt: skip
                    elif missing:
                        warnings.append(f"{loaded.path}:{rule.line}:1: rule {rule.id}: product {code} is missing "
                                        f"from {agency} catalog version(s) {', '.join(missing)}")  # fmt: skip
    return errors, warnings


def _mapping_files(directory: Path) -> list[Path]:
    """The files :func:`load_mappings` reads, as they are now."""
    catalogs = sorted((directory / "catalogs").glob("*/*.yaml")) if (directory / "catalogs").is_dir() else []
    rules = sorted((directory / "rules").rglob("*.yaml")) if (directory / "rules").is_dir() else []
    others = [p for p in (directory / "policy.yaml", directory / "exemptions.yaml", directory / "people.csv")
              if p.exists()]  # fmt: skip
    return [*catalogs, *rules, *others]


_LOAD_ATTEMPTS = 5


def load_mappings(directory: Path) -> MappingSet:
    """Load, validate and compile every mapping file under ``directory``; all problems in one ConfigError.

    The version names the content loaded: the files are parsed, then read again for the digest, so a file saved
    in between would give the old rules the new files' version (and a page-preparing worker, which loads the
    directory and trusts an equal version, other rules than the engine's). A load that saw the files change is
    therefore done again."""
    directory = Path(directory)
    for _ in range(_LOAD_ATTEMPTS):
        try:
            before = _digest(directory, _mapping_files(directory))
            loaded = _load_once(directory)
            after = _digest(directory, _mapping_files(directory))
        except FileNotFoundError:  # a file removed between listing and reading: the files changed
            continue
        if before == after:  # nothing changed while loading (compared with itself, not with the loader's list)
            return loaded
    raise ConfigError(f"{directory}: the mapping files kept changing while they were loaded; try again")


def _load_once(directory: Path) -> MappingSet:
    if not directory.is_dir():
        raise ConfigError(f"{directory}: the mappings directory does not exist")
    problems: list[str] = []
    catalogs, found, files = load_catalogs(directory / "catalogs")
    problems.extend(found)
    rule_paths = sorted((directory / "rules").rglob("*.yaml")) if (directory / "rules").is_dir() else []
    loaded: list[LoadedRuleFile] = []
    for order, path in enumerate(rule_paths):
        try:
            data, marks = load_yaml(path)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        rule_file, found = parse_rule_file(data, path=path, marks=marks, label=str(path.relative_to(directory)),
                                           order=order)  # fmt: skip
        problems.extend(found)
        if rule_file is not None:
            loaded.append(rule_file)
    rule_files = tuple(loaded)
    default_policy, policies, found = load_policies(directory / "policy.yaml")
    problems.extend(found)
    exemptions, found = load_exemptions(directory / "exemptions.yaml")
    problems.extend(found)
    people_path = directory / "people.csv"
    warnings: list[str] = []
    people = PeopleDirectory.empty()
    if people_path.exists():
        try:
            people = load_people(people_path)
        except ConfigError as exc:
            problems.append(str(exc))
    else:
        warnings.append(f"{people_path}: no people directory; every participant will be unresolved")
    errors, more = _cross_check(catalogs, rule_files)
    problems.extend(errors)
    warnings.extend(more)
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the mappings at {directory}:\n" + "\n".join(problems))
    all_files = [*files, *rule_paths, *(p for p in (directory / "policy.yaml", directory / "exemptions.yaml",
                                                     people_path) if p.exists())]  # fmt: skip
    return MappingSet(
        version=_digest(directory, all_files), content_digest=_digest(directory, all_files, size=32),
        directory=people, catalogs=catalogs, rule_files=rule_files,
        default_policy=default_policy, policies=policies, exemptions=exemptions, root=directory,
        files=tuple(all_files), warnings=tuple(warnings),
    )  # fmt: skip


class MappingHolder:
    """The running gateway's current mappings; a reload that fails keeps the working set in place."""

    def __init__(self, directory: Path, current: MappingSet | None = None) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._current = current if current is not None else load_mappings(directory)

    @property
    def current(self) -> MappingSet:
        return self._current

    def reload(self) -> MappingSet:
        """Load again; on a ConfigError the error propagates and :attr:`current` is unchanged."""
        with self._lock:
            fresh = load_mappings(self.directory)
            self._current = fresh
            return fresh


__all__ = ["MappingHolder", "MappingSet", "load_mappings"]
