"""Subcommands of the `vapi-trl` CLI, one module each (see `vapi_trl.cli`)."""
