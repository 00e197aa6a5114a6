"""msgspec request and response structs, one module per resource."""
