"""``build_dataset``: crawler db -> cleaned, labelled, sampled and split dataset files plus a datasheet.

Order of steps (each removal is counted under the first step that removes a row, so the counts add up to the db):
read -> blind / empty titles -> relevance filter (optional) -> price labels (missing prices, non-trading day,
no previous close, flat) -> dedupe (optional) -> per-label sample -> split -> write.

Title-only filters run before labelling; dedupe runs after it, so a repeated title keeps its earliest *labelled*
copy (a weekend copy that cannot be labelled under ``same-day`` does not knock out a weekday one).
"""
from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from kofinsent import __version__
from kofinsent.dataset import clean
from kofinsent.dataset import datasheet as ds
from kofinsent.dataset.errors import DatasetConfigError, EmptyDatasetError, MissingPricesError
from kofinsent.dataset.files import records_frame, staged_dir, write_jsonl, write_parquet, write_returns
from kofinsent.dataset.labels import REASONS, RULES, PriceCalendar, coverage_gaps, label_posts
from kofinsent.dataset.sampling import SAMPLE_STREAM, SPLIT_STREAM, sample_per_label, sort_posts
from kofinsent.dataset.source import read_db
from kofinsent.dataset.splits import check_split_options, split_frame
from kofinsent.runs import sha256_file

DATA_FILES = ("train.jsonl", "test.jsonl", "train.parquet", "test.parquet")
RETURNS_FILE = "returns.jsonl"  # the price calendar: one line per stock and traded day (export.write_returns)


def build_dataset(
    db: str | Path,
    out: str | Path,
    rule: str,
    per_label: int = 15_000,
    split: str = "random",
    test_size: float = 0.01,
    cutoff: date | str | None = None,
    seed: int = 42,
    *,
    dedupe: bool = False,
    relevance_filter: str | Path | None = None,
    group_by_day: bool = False,
    stratify_stock: bool = False,
    allow_fewer: bool = False,
    allow_missing_prices: bool = False,
    progress: bool = True,
) -> ds.DatasheetDict:
    """Build the dataset in ``out`` and return its datasheet (also written as datasheet.json / datasheet.md).

    Raises a :class:`~kofinsent.dataset.errors.DatasetError` subclass for bad options, missing prices, too few
    posts per label or an empty result (in which case nothing is written), and
    :class:`crawler.errors.StoreError` when ``db`` is not a crawler db.
    """
    if rule not in RULES:
        raise DatasetConfigError(f"unknown rule {rule!r}; expected one of {', '.join(RULES)}")
    if per_label < 0:
        raise DatasetConfigError(f"--per-label must be >= 0 (0 keeps every post), got {per_label}")
    cutoff = _parse_cutoff(cutoff)
    check_split_options(split, test_size, cutoff, stratify_stock, group_by_day)
    rules = clean.load_relevance_rules(relevance_filter) if relevance_filter is not None else None

    steps = tqdm(total=6, desc="dataset", unit="step", disable=not progress or None)
    try:  # the bar is closed on errors too, so a failed build leaves no dangling progress line
        steps.set_postfix_str("read db")
        src = read_db(db, progress=progress)
        n_db = len(src.posts)
        funnel: list[dict] = [{"step": "posts in db", "removed": None, "rows": n_db}]
        removed: dict[str, int] = {}

        def drop(reason: str, n: int, rows: int) -> None:
            removed[reason] = n
            funnel.append({"step": reason, "removed": n, "rows": rows})

        steps.update()
        steps.set_postfix_str("clean")
        posts, cleaned = clean.clean_posts(src.posts)
        drop("blind", cleaned["blind"], n_db - cleaned["blind"])
        drop("empty_title", cleaned["empty_title"], len(posts))
        relevance_report = None
        if rules:
            keep, relevance_report = clean.relevance_filter(posts, rules)
            left = len(posts)
            for name, r in relevance_report.items():
                left -= r["removed"]
                drop(f"relevance:{name}", r["removed"], left)
            posts = posts.loc[keep].reset_index(drop=True)

        steps.update()
        steps.set_postfix_str("label")
        posts = sort_posts(posts)
        calendar = PriceCalendar.from_frame(src.prices, extra_codes=posts["code"].astype(str).unique())
        result = label_posts(posts, calendar, rule)
        gaps = coverage_gaps(posts, result, calendar, src.names)
        if gaps and not allow_missing_prices:
            raise MissingPricesError(gaps)
        left = len(posts)
        for name in REASONS.values():
            left -= result.counts[name]
            drop(name, result.counts[name], left)
        labelled = posts.iloc[result.kept].reset_index(drop=True).drop(columns=["is_blind"])
        labelled["label"] = result.labels()
        labelled["move_day"] = result.move_day
        labelled["close_prev"] = result.close_prev
        labelled["close"] = result.close
        labelled["ret"] = result.ret
        if dedupe:
            keep, n_dup = clean.dedupe_titles(labelled)
            labelled = labelled.loc[keep].reset_index(drop=True)
        else:
            n_dup = 0
        drop("duplicate_title", n_dup, len(labelled))
        if labelled.empty:
            why = ", ".join(f"{k} {v}" for k, v in removed.items() if v)
            raise EmptyDatasetError(f"no labelled posts left from {n_db} in the db ({why or 'the db has no posts'}); "
                                    "nothing written")

        steps.update()
        steps.set_postfix_str("sample")
        sample, sampling = sample_per_label(labelled, per_label, seed, allow_fewer)
        drop("not_sampled", len(labelled) - len(sample), len(sample))

        steps.update()
        steps.set_postfix_str("split")
        is_test, split_info = split_frame(sample, split, test_size, seed, cutoff, stratify_stock, group_by_day)
        final = sample.assign(split=np.where(is_test, "test", "train"))
        final = final.sort_values(["posted_at", "code", "nid"], kind="stable").reset_index(drop=True)

        steps.update()
        steps.set_postfix_str("write")
        records = records_frame(final, src.names, rule)
        test_mask = final["split"].to_numpy() == "test"
        parameters = {
            "rule": rule, "per_label": per_label, "split": split, "test_size": None if cutoff else test_size,
            "cutoff": cutoff.isoformat() if cutoff else None, "seed": seed, "dedupe": dedupe,
            "relevance_filter": None if rules is None else {
                "file": Path(relevance_filter).name, "sha256": sha256_file(relevance_filter),
                "rules": {r.name: r.spec() for r in rules},
            },
            "group_by_day": group_by_day, "stratify_stock": stratify_stock, "allow_fewer": allow_fewer,
            "allow_missing_prices": allow_missing_prices,
        }
        with staged_dir(Path(out)) as stage:
            files = {}
            for part, mask in (("train", ~test_mask), ("test", test_mask)):
                part_records = records.loc[mask].reset_index(drop=True)
                write_jsonl(part_records, stage / f"{part}.jsonl", progress)
                write_parquet(part_records, stage / f"{part}.parquet")
                for ext in ("jsonl", "parquet"):
                    files[f"{part}.{ext}"] = {"rows": int(mask.sum()), "sha256": sha256_file(stage / f"{part}.{ext}")}
            n_returns = write_returns(calendar, stage / RETURNS_FILE)
            files[RETURNS_FILE] = {"rows": n_returns, "sha256": sha256_file(stage / RETURNS_FILE)}
            sheet: ds.DatasheetDict = {
                "datasheet_version": ds.DATASHEET_VERSION,
                "kofinsent_version": __version__,
                "source": {
                    "db_file": src.db_file, "db_bytes": src.db_bytes, "db_sha256": src.db_sha256,
                    "wal_pending": src.wal_pending, "posts_in_db": n_db,
                    "stocks_with_posts": int(src.posts["code"].astype(str).nunique()),
                    "price_bars_in_db": int(len(src.prices)),
                },
                "parameters": parameters,
                "seeds": {"seed": seed, "sampling_rng": [seed, SAMPLE_STREAM], "split_rng": [seed, SPLIT_STREAM],
                          "generator": "numpy.random.default_rng (PCG64)"},
                "label_rule": {"name": rule, "text": ds.RULE_TEXT[rule], "session_close_kst": "15:30",
                               "up": "[상승]: close > previous close", "down": "[하락]: close < previous close"},
                "removed": removed,
                "relevance_filter": relevance_report,
                "funnel": funnel,
                "sampling": sampling,
                "split": split_info,
                "counts": ds.counts(final, src.names),
                "date_range": ds.date_ranges(final),
                "prices": calendar.summary(),
                "files": {k: files[k] for k in (*DATA_FILES, RETURNS_FILE)},
            }
            (stage / "datasheet.json").write_text(ds.to_json(sheet), encoding="utf-8", newline="\n")
            (stage / "datasheet.md").write_text(ds.to_markdown(sheet), encoding="utf-8", newline="\n")
        steps.update()
        return sheet
    finally:
        steps.close()


def _parse_cutoff(cutoff: date | str | None) -> date | None:
    if cutoff is None or isinstance(cutoff, date):
        return cutoff
    try:
        return date.fromisoformat(str(cutoff))
    except ValueError:
        raise DatasetConfigError(f"--cutoff {cutoff!r} is not a date (YYYY-MM-DD)") from None
