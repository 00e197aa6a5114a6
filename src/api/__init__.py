"""The HTTP API (Litestar): auth, schemas, controllers. Thin: parse, authorize, call, map."""
