"""HTTP routes of the platform API, one module per resource under `serving.api.routes`."""
