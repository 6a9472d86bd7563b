"""The national document exchange axis (Trục liên thông văn bản quốc gia, "VXP"): a Python connector.

``kind: vxp`` in a source file (see ``sources/vxp.yaml``); :class:`VxpConnector` lists, fetches and acknowledges
edXML messages with ``XroadVnpt-*`` HMAC-signed headers. Acknowledgements are sent only for messages whose page
the store has committed (they travel in the cursor): see :mod:`connectors.vxp.connector`.
"""

from connectors.vxp.config import VxpEdxmlConfig, VxpSourceConfig, VxpStreamConfig
from connectors.vxp.connector import VxpConnector

__all__ = ["VxpConnector", "VxpEdxmlConfig", "VxpSourceConfig", "VxpStreamConfig"]
