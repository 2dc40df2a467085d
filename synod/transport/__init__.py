"""Synod transport (see DESIGN.md)."""
