"""One controller per resource; handlers parse, authorize, call, map."""
