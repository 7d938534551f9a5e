"""The `shironzi` command line."""
