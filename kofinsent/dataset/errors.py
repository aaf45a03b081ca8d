"""Typed errors of the dataset stage. Each message is one line that says what was seen and what to try."""
from __future__ import annotations

from dataclasses import dataclass


class DatasetError(Exception):
    """Base class: every error the dataset builder raises on purpose."""


class DatasetConfigError(DatasetError):
    """An option, an option combination, an input path or a relevance-filter file is not usable."""


@dataclass(frozen=True)
class CoverageGap:
    """Posts of one stock whose price-derived label needs a day outside the stock's stored prices."""

    code: str
    name: str | None
    posts: int
    first_post_day: str          # 'YYYY-MM-DD', KST calendar day of the earliest uncovered post
    last_post_day: str
    first_price_day: str | None  # None: the stock has no (traded) price bars at all
    last_price_day: str | None

    def describe(self) -> str:
        who = f"{self.code} ({self.name})" if self.name else self.code
        span = (self.first_post_day if self.first_post_day == self.last_post_day
                else f"{self.first_post_day}..{self.last_post_day}")
        if self.first_price_day is None:
            return f"{who}: no traded price bars at all; {self.posts} posts dated {span} need them"
        return (f"{who}: {self.posts} posts dated {span} need prices outside the stored "
                f"{self.first_price_day}..{self.last_price_day}")


class MissingPricesError(DatasetError):
    """Some stock's prices do not cover its posts (before its first bar, after its last, or no bars at all)."""

    MAX_LISTED = 10

    def __init__(self, gaps: list[CoverageGap]) -> None:
        self.gaps = gaps
        shown = "; ".join(g.describe() for g in gaps[: self.MAX_LISTED])
        more = f"; and {len(gaps) - self.MAX_LISTED} more stocks" if len(gaps) > self.MAX_LISTED else ""
        super().__init__(
            f"missing prices: {shown}{more}. Crawl prices for those dates (`kofinsent crawl prices`, a range a few "
            "days wider than the posts') or pass --allow-missing-prices to drop and count such posts"
        )


class TooFewPostsError(DatasetError):
    """Fewer labelled posts than ``--per-label`` asks for, in at least one label."""

    def __init__(self, requested: int, available: dict[str, int]) -> None:
        self.requested, self.available = requested, dict(available)
        have = ", ".join(f"{k} {v}" for k, v in available.items())
        super().__init__(
            f"too few labelled posts: asked for {requested} per label, available {have}. Lower --per-label, "
            "pass --per-label 0 to keep every post (unbalanced), or --allow-fewer to take as many as the smaller "
            "label has"
        )


class EmptyDatasetError(DatasetError):
    """Nothing (or an empty split) would be written; no file is written instead."""
