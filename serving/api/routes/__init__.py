"""One router per resource; `serving.app` includes them all under `/v1` (health checks at the root)."""
