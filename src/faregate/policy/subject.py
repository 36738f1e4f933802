"""Who a request counts against, as plain values: the policy package's view of a principal,
so rate limits, budgets and moderation never import auth."""

from __future__ import annotations

from typing import NamedTuple

SCOPES = ("key", "team", "customer", "tag", "user", "model", "global")


class Subject(NamedTuple):
    """A NamedTuple: made once per request and a key of the limits' and budgets' caches,
    where a dataclass's hash and equality (Python methods) cost more than its lookups."""

    key_id: str | None = None
    team_id: str | None = None
    customer_id: str | None = None
    tags: tuple[str, ...] = ()
    user: str | None = None  # the end user named in the request body, if any

    def values(self, scope: str, model: str) -> tuple[str, ...]:
        """The subject's value(s) for a scope; empty when it has none (e.g. no team)."""
        if scope == "tag":
            return tuple(dict.fromkeys(self.tags))
        if scope == "model":
            return (model,) if model else ()
        if scope == "global":
            return ("all",)
        single = {
            "key": self.key_id,
            "team": self.team_id,
            "customer": self.customer_id,
            "user": self.user,
        }[scope]
        return (single,) if single else ()
