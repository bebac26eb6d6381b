"""OCI distribution client: push, pull, auth."""
