"""Operator tools (dfctl)."""
