"""Synod client (see DESIGN.md)."""
