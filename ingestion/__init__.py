"""Ingestion: event contracts and vectorised validation, synthetic multi-tenant data, batch connectors,
the stream ingestor and the broker launcher. Imports only the kernel (`shironzi`)."""
