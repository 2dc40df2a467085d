"""The recipes' errors. Client errors (synod.client) pass through unchanged."""

from __future__ import annotations

from synod.client import ClientError


class RecipeError(ClientError):
    """Base of the recipes' own errors."""


class SessionLost(RecipeError):
    """The recipe's lease expired or was revoked: every key it held is gone (the lock or
    leadership is lost). Stop acting on what the recipe protected; start again."""


class LockReentryError(RecipeError):
    """This lock (or a lock of the same name in the same session) is already held or being
    acquired: locks are not reentrant."""


class NotHeld(RecipeError):
    """An operation needs the lock, leadership or message claim that the caller no longer
    (or never) held."""


class StaleToken(RecipeError):
    """A fencing check refused a token older than one already seen."""


class QueueEmpty(RecipeError):
    """No message was available before the deadline."""
