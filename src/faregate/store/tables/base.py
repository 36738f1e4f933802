"""The shared MetaData and column helpers every domain's tables use."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

from sqlalchemy import BigInteger, MetaData, Numeric, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

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


class ExactNumeric(TypeDecorator[Decimal]):
    """NUMERIC(precision, scale) on PostgreSQL. On SQLite, whose NUMERIC column keeps any
    number as an integer or a float (`12.000000000000001` comes back `12.000000000000002`),
    the decimal's text in a VARCHAR, rounded to `scale` places half away from zero as
    PostgreSQL rounds it, and read back as a `Decimal`."""

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int) -> None:
        super().__init__(precision, scale, asdecimal=True)
        self.precision = precision
        self.scale = scale
        self._places = Decimal(1).scaleb(-scale)
        # Enough digits for every value the column holds; a larger one is refused
        # (InvalidOperation), as PostgreSQL refuses it.
        self._context = Context(prec=precision, rounding=ROUND_HALF_UP)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(self.precision + 2))  # sign and point
        return dialect.type_descriptor(Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        exact = Decimal(value).quantize(self._places, context=self._context)
        return format(exact.normalize(self._context), "f")

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None or dialect.name != "sqlite":
            return value  # type: ignore[no-any-return]
        return Decimal(value)
