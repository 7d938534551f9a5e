"""Platform monitoring: per-tenant data monitors, anomaly detection, model drift, pipeline metrics and traces,
the monitor process and the platform-health views."""
