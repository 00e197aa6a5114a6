"""Test doubles that behave like real clients (a software WebAuthn authenticator, ...)."""
