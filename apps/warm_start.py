"""`python -m apps.warm_start run APP [flags]`: Streamlit's own command line, started after the data stack
(polars, delta-rs, Arrow, Altair) is imported and the registry is opened, so the first visitor does not pay
for them. `shironzi serve dashboard` runs this."""

from __future__ import annotations


def preload() -> None:
    """Import what every page needs and open (and migrate) the tenant registry once."""
    import altair  # noqa: F401
    import mlflow  # noqa: F401  (the Models and Pipelines pages read the registry through its client)
    import polars  # noqa: F401

    import apps.auth  # noqa: F401
    import apps.components  # noqa: F401
    import apps.data  # noqa: F401
    from shironzi.lake import delta  # noqa: F401
    from shironzi.tenancy.registry import get_registry

    get_registry()


def main() -> None:
    preload()
    from streamlit.web.cli import main as streamlit_main

    streamlit_main(prog_name="streamlit")


if __name__ == "__main__":
    main()
