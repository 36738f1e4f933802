"""Storage: SQLAlchemy Core tables and migrations, and the counter/hold backends."""
