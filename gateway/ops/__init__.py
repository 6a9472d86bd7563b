"""Operator actions, as keyword-only service functions shared by the admin API and the CLI.

::

    control      pause / resume a source, request a manual run (stored: every replica sees it)
    cursors      view the committed cursors; reset one to a time or to the beginning (Kafka Connect style)
    quarantine   list, inspect, replay (re-normalize + re-value, no re-pull), discard with a reason
    audit        every action above is written to ``audit_log`` with its actor and detail

Errors: :class:`NotFound`, :class:`Conflict` and :class:`Invalid` (all :class:`OpsError`, a ``GatewayError``);
the API turns them into 404, 409 and 422, the CLI prints them.
"""

from gateway.ops._errors import Conflict, Invalid, NotFound, OpsError
from gateway.ops.audit import cli_actor, record_action

__all__ = ["Conflict", "Invalid", "NotFound", "OpsError", "cli_actor", "record_action"]
