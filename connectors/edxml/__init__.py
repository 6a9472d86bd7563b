"""edXML (QCVN 102:2016/BTTTT): document and status packets, read leniently and validated strictly.

- :func:`read_packet` / :func:`parse_packet`: bytes or an lxml element -> a plain dict (``kind`` document or
  status), see :mod:`connectors.edxml.packets`;
- :func:`compile_edxml_normalizer`: a record carrying a document packet and its status packets -> a
  :class:`~gateway.types.WorkItem`, see :mod:`connectors.edxml.normalize`;
- :func:`parse_edxml_date`: both date orders, with or without a time, as Vietnam time.
"""

from connectors.edxml._dates import format_edxml_date, parse_edxml_date
from connectors.edxml.normalize import DEFAULT_STATUS_MAP, EdxmlNormalizeConfig, StatusRule, compile_edxml_normalizer
from connectors.edxml.packets import BUSINESS_DOC_TYPES, NS, STATUS_CODES, EdxmlError, parse_packet, read_packet

__all__ = [
    "BUSINESS_DOC_TYPES",
    "DEFAULT_STATUS_MAP",
    "NS",
    "STATUS_CODES",
    "EdxmlError",
    "EdxmlNormalizeConfig",
    "StatusRule",
    "compile_edxml_normalizer",
    "format_edxml_date",
    "parse_edxml_date",
    "parse_packet",
    "read_packet",
]
