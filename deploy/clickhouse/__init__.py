"""ClickHouse schema migrations, applied in order by the worker at start: NNN_name.sql."""
