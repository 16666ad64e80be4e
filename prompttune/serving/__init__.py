"""`prompttune serve`: the HTTP server, its micro-batcher and a Python client."""
