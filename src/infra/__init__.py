"""Shared infrastructure: database access used by the write side's adapters and the read side."""
