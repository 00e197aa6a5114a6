"""Implementations of the ports; constructed only by composition roots."""
