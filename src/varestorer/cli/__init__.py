"""Command-line interface: ``varestorer <command> ...``. Each command is one module in this package."""
