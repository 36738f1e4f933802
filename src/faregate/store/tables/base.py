"""The shared MetaData and column helpers every domain's tables use."""

from __future__ import annotations

from sqlalchemy import BigInteger, MetaData

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Money columns hold integer nanos (1e-9 of the currency unit).
Nanos = BigInteger
