"""`oddspot serve`: an HTTP inspection service."""
