"""Pure logic: no Dagster imports, so serving and plain pytest can use it."""
