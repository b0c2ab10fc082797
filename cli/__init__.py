"""Command-line interface: thin typer apps over the library."""
