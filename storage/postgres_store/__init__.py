"""The PostgreSQL backend (asyncpg): `await PostgresLedger.open("postgresql://...")`."""

from .backend import PostgresLedger, migrate

__all__ = ["PostgresLedger", "migrate"]
