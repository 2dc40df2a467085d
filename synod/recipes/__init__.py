"""Synod recipes (see DESIGN.md)."""
