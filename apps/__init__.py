"""Streamlit dashboards for analysts, platform operators and compliance officers (`shironzi serve dashboard`)."""
