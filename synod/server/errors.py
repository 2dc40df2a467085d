"""The member runtime's operating errors, shared by the runtime's modules and the api."""

from __future__ import annotations


class NoLeader(Exception):
    """No leader is known: the cluster is electing one or this member is cut off."""


class RequestTimeout(Exception):
    """The request's outcome is unknown: it may or may not have been applied."""


class Overloaded(Exception):
    """Too many requests are waiting; nothing was done."""
