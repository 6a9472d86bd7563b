"""The declarative SOAP source: WSDL + YAML -> a connector (see ``docs/soap.md``).

Public surface: :class:`SoapConnector` (the ``soap`` connector kind), :class:`SoapSourceConfig` (the YAML
model) and :func:`clear_wsdl_cache`.
"""

from connectors.soap._wsdl import clear_wsdl_cache
from connectors.soap.config import SoapSourceConfig
from connectors.soap.connector import SoapConnector

__all__ = ["SoapConnector", "SoapSourceConfig", "clear_wsdl_cache"]
