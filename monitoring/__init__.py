"""Platform monitoring: per-tenant data monitors, anomaly detection and model drift."""
