"""Title cleaning: blind and empty posts, Unicode/whitespace normalisation, optional dedupe and relevance filter.

The optional steps are off by default (the seed study used raw titles); when on, every row they remove is counted,
per rule for the relevance filter, in the datasheet.

Relevance-filter file (TOML, or JSON with the same shape); unknown keys are errors::

    [[rules]]
    name = "politics"                  # unique; the datasheet counts removals under "relevance:politics"
    description = "..."                # optional
    keywords = ["대통령", "국회"]       # plain substrings, case-insensitive
    patterns = ['문재?인', '\\b선거\\b']  # Python `re` regular expressions, searched, case-insensitive
    codes = ["005930"]                 # optional: apply only to these stocks

Rules are applied in file order to the normalised title; a title matching several rules is removed by (and counted
under) the first. ``matched`` in the report counts every rule's matches independently.
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kofinsent.dataset.errors import DatasetConfigError

# Zero-width space and BOM carry no text and make identical titles compare unequal. ZWJ/ZWNJ are kept: they join
# emoji sequences.
_INVISIBLE = re.compile("[\u200b\ufeff]")
_SPACE = re.compile(r"\s+")


def normalize_titles(titles: pd.Series) -> pd.Series:
    """NFC, invisible characters removed, every whitespace run (incl. U+3000, NBSP, newlines) -> one space, stripped."""
    t = titles.astype(str).str.normalize("NFC")
    t = t.str.replace(_INVISIBLE, "", regex=True)
    return t.str.replace(_SPACE, " ", regex=True).str.strip()


def clean_posts(posts: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop blind posts and titles empty after normalisation; returns the kept rows (title normalised) and counts."""
    blind = posts["is_blind"].to_numpy(dtype=bool)
    kept = posts.loc[~blind].copy()
    kept["title"] = normalize_titles(kept["title"])
    empty = (kept["title"].str.len() == 0).to_numpy()
    kept = kept.loc[~empty].reset_index(drop=True)
    return kept, {"blind": int(blind.sum()), "empty_title": int(empty.sum())}


def dedupe_titles(frame: pd.DataFrame) -> tuple[np.ndarray, int]:
    """Mask keeping the earliest (posted_at, nid) post of each identical (code, title); and how many it drops.

    ``frame`` must already be sorted by (code, posted_at, nid), which makes "first occurrence" the earliest.
    """
    dup = frame.duplicated(subset=["code", "title"], keep="first").to_numpy()
    return ~dup, int(dup.sum())


@dataclass(frozen=True)
class RelevanceRule:
    name: str
    regexes: tuple[re.Pattern[str], ...]  # the keywords as one alternation, then each pattern on its own
    codes: frozenset[str] | None
    description: str = ""
    keywords: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()

    def spec(self) -> dict[str, object]:
        return {"description": self.description, "keywords": list(self.keywords), "patterns": list(self.patterns),
                "codes": sorted(self.codes) if self.codes is not None else None}


_RULE_KEYS = {"name", "description", "keywords", "patterns", "codes"}


def load_relevance_rules(path: str | Path) -> list[RelevanceRule]:
    """Parse a relevance-filter file (``.toml`` or ``.json``); any mistake is a :class:`DatasetConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetConfigError(f"{path}: no such relevance-filter file")
    try:
        raw = json.loads(path.read_text("utf-8")) if path.suffix == ".json" else tomllib.loads(path.read_text("utf-8"))
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise DatasetConfigError(f"{path}: cannot parse: {e}") from None
    extra = set(raw) - {"rules"}
    if extra or not isinstance(raw.get("rules"), list) or not raw["rules"]:
        raise DatasetConfigError(f"{path}: expected only a non-empty `rules` list (saw keys {sorted(raw)})")
    rules: list[RelevanceRule] = []
    for i, r in enumerate(raw["rules"]):
        where = f"{path}: rules[{i}]"
        if not isinstance(r, dict):
            raise DatasetConfigError(f"{where}: expected a table")
        unknown = set(r) - _RULE_KEYS
        if unknown:
            raise DatasetConfigError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(_RULE_KEYS)})")
        name = r.get("name")
        if not isinstance(name, str) or not name or name in {x.name for x in rules}:
            raise DatasetConfigError(f"{where}: `name` must be a non-empty string, unique in the file")
        keywords, patterns, codes = r.get("keywords", []), r.get("patterns", []), r.get("codes")
        for key, val in (("keywords", keywords), ("patterns", patterns)) + ((("codes", codes),) if codes else ()):
            if not isinstance(val, list) or not all(isinstance(x, str) and x for x in val):
                raise DatasetConfigError(f"{where}: `{key}` must be a list of non-empty strings")
        if not keywords and not patterns:
            raise DatasetConfigError(f"{where} ({name}): give `keywords` or `patterns`")
        # Patterns compile one by one (not joined into one alternation) so each may carry its own inline flags.
        regexes = [re.compile("|".join(map(re.escape, keywords)), re.IGNORECASE)] if keywords else []
        for pat in patterns:
            try:
                regexes.append(re.compile(pat, re.IGNORECASE))
            except re.error as e:
                raise DatasetConfigError(f"{where} ({name}): bad pattern {pat!r}: {e}") from None
        rules.append(RelevanceRule(
            name=name, regexes=tuple(regexes), codes=frozenset(codes) if codes else None,
            description=str(r.get("description", "")), keywords=tuple(keywords), patterns=tuple(patterns),
        ))
    return rules


def relevance_filter(frame: pd.DataFrame, rules: list[RelevanceRule]) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """Mask of rows no rule matches; per rule ``removed`` (first matching rule) and ``matched`` (independent)."""
    titles = frame["title"].tolist()
    codes = frame["code"].astype(str).to_numpy(dtype=object)
    keep = np.ones(len(frame), dtype=bool)
    report: dict[str, dict[str, int]] = {}
    for rule in rules:
        hit = np.zeros(len(titles), dtype=bool)
        for rx in rule.regexes:
            search = rx.search
            hit |= np.fromiter((search(t) is not None for t in titles), dtype=bool, count=len(titles))
        if rule.codes is not None:
            hit &= np.isin(codes, list(rule.codes))
        report[rule.name] = {"removed": int((hit & keep).sum()), "matched": int(hit.sum())}
        keep &= ~hit
    return keep, report
