"""Connectors shipped with the gateway: the declarative REST and SOAP sources and the shared auth strategies.

Third-party connectors live in their own packages and register under the ``kpigw.connectors`` entry point.
"""
