"""Alerts: rules declared as code (`rules.RULES`), evaluated into `_platform/alerts` with de-duplication by
fingerprint and silences, and delivered as Alertmanager webhook payloads (`engine.evaluate`)."""
