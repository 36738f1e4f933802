"""YAML for price files with exact numbers: floats become Decimal from their literal text,
"16:30" stays a string (YAML 1.1 would read it as the base-60 integer 990), duplicate keys
are errors. Dumping writes Decimals as plain numbers. No float ever appears."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from faregate.money import decimal_str
from faregate.pricing.errors import PriceCatalogError

_FLOAT = "tag:yaml.org,2002:float"
# libyaml's parser when PyYAML was built with it (same nodes, ~15x faster).
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_INT = "tag:yaml.org,2002:int"


def load_yaml(text: str, *, name: str) -> Any:
    """Parse one YAML document exactly; `name` is used in error messages."""
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise PriceCatalogError(f"{name}: invalid YAML: {exc}") from None
    if node is None:
        return None
    return _Builder(name).build(node)


class _Builder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.constructor = yaml.constructor.SafeConstructor()

    def build(self, node: Any) -> Any:
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item) for item in node.value]
        return self._scalar(node)

    def _mapping(self, node: Any) -> dict[Any, Any]:
        self.constructor.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.build(key_node)
            if isinstance(key, Decimal):
                key = decimal_str(key)
            if key in out:
                line = key_node.start_mark.line + 1
                raise PriceCatalogError(f"{self.name}: line {line}: duplicate key {key!r}")
            out[key] = self.build(value_node)
        return out

    def _scalar(self, node: Any) -> Any:
        if node.tag in (_FLOAT, _INT) and ":" in node.value:
            return str(node.value)  # a clock time such as 16:30, not base 60
        if node.tag == _FLOAT:
            return self._decimal(node)
        return self.constructor.construct_object(node, deep=True)

    def _decimal(self, node: Any) -> Decimal:
        text = str(node.value).replace("_", "")
        try:
            value = Decimal(text)
        except InvalidOperation:
            value = Decimal("NaN")
        if not value.is_finite():
            line = node.start_mark.line + 1
            raise PriceCatalogError(f"{self.name}: line {line}: not a finite number: {text}")
        return value


def dump_yaml_document(data: Any, *, header: str = "") -> str:
    """YAML text for `data`; Decimals become plain numbers that load back exactly."""
    no_aliases = {"ignore_aliases": lambda self, data: True}  # shared dates stay plain
    dumper: Any = type("_PriceDumper", (yaml.SafeDumper,), no_aliases)
    dumper.add_representer(Decimal, _represent_decimal)
    body = yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True, width=100)
    return header + str(body)


def _represent_decimal(dumper: Any, value: Decimal) -> Any:
    text = decimal_str(value)
    tag = _INT if "." not in text else _FLOAT
    return dumper.represent_scalar(tag, text)
