"""Test-wide settings.

Hypothesis' per-example deadline is a timing assertion: on a loaded 2-core machine it fails
tests whose behaviour is right. Our tests assert behaviour, never time (STYLE.md), so it is off.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("synod", deadline=None)
settings.load_profile("synod")
