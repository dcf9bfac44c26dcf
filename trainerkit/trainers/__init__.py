"""Built-in trainer types, one module each (imported only when configured)."""
