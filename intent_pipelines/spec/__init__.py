"""Intent files: the schema (models) and loading with file:line errors (loader)."""
