"""The platform API: FastAPI app factory, routes under `/v1`, auth dependencies, rate limits and telemetry.

    from serving.app import create_app
    app = create_app()          # served by `shironzi serve api`

Importing this package imports neither FastAPI nor the model stack; `serving.app` does.
"""
