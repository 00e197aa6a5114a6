"""The rules of MFA: aggregates, their events, value objects and policies. Pure: no I/O."""
