"""Monitoring: pipeline metrics and traces, the monitor process, and the platform-health views."""
