"""The `csst` command line (import name `csst_cli`)."""
