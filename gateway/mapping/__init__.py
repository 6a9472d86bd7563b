"""The mapping engine: product catalogs, rules, scoring policy and people directory -> KPI facts.

Public surface::

    load_mappings(directory) -> MappingSet        # validates everything; ConfigError lists every problem
    MappingSet.value(item, raw=...) -> Valuation  # the hot path; never raises for data problems
    MappingSet.policy_for(agency) -> ScoringPolicy
    MappingSet.catalog_for(agency, on) -> Catalog | None
    MappingSet.directory: PeopleDirectory
    MappingHolder(directory).reload()              # keeps the working set when a reload fails

The file formats are described in ``docs/mappings.md``; the CLI commands in :mod:`gateway.mapping.cli`.
"""

from gateway.mapping.catalog import Catalog, Product
from gateway.mapping.mappingset import MappingHolder, MappingSet, load_mappings
from gateway.mapping.people import PeopleDirectory, Person
from gateway.mapping.policy import Exemption, ScoringPolicy
from gateway.mapping.valuation import MappingProblem, Valuation

__all__ = [
    "Catalog",
    "Exemption",
    "MappingHolder",
    "MappingProblem",
    "MappingSet",
    "PeopleDirectory",
    "Person",
    "Product",
    "ScoringPolicy",
    "Valuation",
    "load_mappings",
]
