"""The subcommands, one module per service area; each module's `register` adds its parsers."""
