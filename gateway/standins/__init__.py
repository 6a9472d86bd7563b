"""Stand-ins for the legacy systems the gateway reads: real HTTP servers on loopback, seeded with
deterministic synthetic data (agencies, civil servants, documents), for the demo, training and the tests.

- :mod:`gateway.standins.seed`: agencies, units, people (with their id in every system), Decree 30 types.
- :mod:`gateway.standins.server`: ``serve_in_thread(app)`` runs any ASGI app on a loopback port.
- :mod:`gateway.standins.eoffice`: the VNPT iOffice-shaped e-office (``EOfficeState``, ``create_eoffice_app``).
- :mod:`gateway.standins.edoc_hub`: the provincial eDoc hub, edXML over SOAP (``EdocHubState``).
- :mod:`gateway.standins.lgsp`: the LGSP one-stop system, OAuth2 REST (``LgspState``).
- :mod:`gateway.standins.vxp`: the national document-exchange axis, HMAC-signed REST (``VxpState``).

Importing this package does no work; data is generated when a state object is built.
"""

from gateway.standins.eoffice import AdvanceResult, EOfficeState, create_eoffice_app
from gateway.standins.seed import (
    DOCUMENT_TYPES,
    Agency,
    DocumentType,
    Person,
    Unit,
    agencies,
    people,
    units,
    write_people_directory,
)
from gateway.standins.server import RunningServer, serve_in_thread

__all__ = [
    "DOCUMENT_TYPES",
    "AdvanceResult",
    "Agency",
    "DocumentType",
    "EOfficeState",
    "Person",
    "RunningServer",
    "Unit",
    "agencies",
    "create_eoffice_app",
    "people",
    "serve_in_thread",
    "units",
    "write_people_directory",
]
