"""datasheet.json / datasheet.md: what a dataset holds, how it was made, and what was removed on the way.

No timestamps or absolute paths go in, so two builds from the same db with the same options write identical bytes.
"""
from __future__ import annotations

import json
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from kofinsent.labels import LABELS

DATASHEET_VERSION = 1

RULE_TEXT = {
    "same-day": ("seed 003's rule: the close of the post's KST calendar day versus the stock's previous trading day's "
                 "close. Posts on days the stock did not trade (weekends, holidays, halts) get no label."),
    "next-session": ("leakage-free: the first session whose outcome the post could not have seen. A post before "
                     "15:30 KST on a trading day gets that day's close versus the previous close; a post at 15:30:00 "
                     "or later, or on a non-trading day, gets the next trading day's."),
}

# Why each removal reason exists, for the markdown sheet (relevance rules are added per file).
REASON_TEXT = {
    "blind": "post hidden by the forum (is_blind)",
    "empty_title": "title empty after NFC and whitespace normalisation",
    "missing_prices": "the day the label needs lies outside the stock's stored traded bars (or it has none); "
                      "only dropped with --allow-missing-prices, otherwise the build stops",
    "non_trading_day": "same-day rule: the stock did not trade on the post's day (weekend, holiday, halt)",
    "no_previous_close": "the move day is the stock's first stored bar, so there is no previous close "
                         "(posts on the first price date, and next-session posts the evening before it)",
    "flat": "close equal to the previous close: neither up nor down",
    "duplicate_title": "--dedupe: same normalised title as an earlier labelled post of the same stock",
    "not_sampled": "labelled but not drawn by --per-label",
}


class DatasheetDict(TypedDict):
    """Top-level keys of datasheet.json (values are plain JSON types)."""

    datasheet_version: int
    kofinsent_version: str
    source: dict[str, Any]
    parameters: dict[str, Any]
    seeds: dict[str, Any]
    label_rule: dict[str, Any]
    removed: dict[str, int]
    relevance_filter: dict[str, Any] | None
    funnel: list[dict[str, Any]]
    sampling: dict[str, Any]
    split: dict[str, Any]
    counts: dict[str, Any]
    date_range: dict[str, Any]
    prices: dict[str, Any]
    files: dict[str, Any]


def counts(final: pd.DataFrame, names: dict[str, str]) -> dict[str, Any]:
    """Counts per split, label, split x label, stock and year (of posted_at, KST)."""
    split = final["split"].to_numpy(dtype=object)
    label = final["label"].to_numpy(dtype=object)
    code = final["code"].astype(str).to_numpy(dtype=object)
    year = final["posted_at"].to_numpy().astype("datetime64[Y]").astype(int) + 1970

    def table(keys: np.ndarray) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for k in sorted(set(keys.tolist())):
            m = keys == k
            row = {"total": int(m.sum())}
            row.update({s: int((m & (split == s)).sum()) for s in ("train", "test")})
            row.update({lab: int((m & (label == lab)).sum()) for lab in LABELS})
            out[str(k)] = row
        return out

    by_stock = table(code)
    for c, row in by_stock.items():
        by_stock[c] = {"name": names.get(c), **row}
    return {
        "total": int(len(final)),
        "by_split": {s: int((split == s).sum()) for s in ("train", "test")},
        "by_label": {lab: int((label == lab).sum()) for lab in LABELS},
        "by_split_label": {s: {lab: int(((split == s) & (label == lab)).sum()) for lab in LABELS}
                           for s in ("train", "test")},
        "by_stock": by_stock,
        "by_year": table(year),
    }


def date_ranges(final: pd.DataFrame) -> dict[str, Any]:
    def rng(col: str, mask: np.ndarray, unit: str, suffix: str) -> list[str] | None:
        v = final[col].to_numpy()[mask]
        if len(v) == 0:
            return None
        return [str(x.astype(f"datetime64[{unit}]")) + suffix for x in (v.min(), v.max())]

    split = final["split"].to_numpy(dtype=object)
    out: dict[str, Any] = {}
    for col, unit, suffix in (("posted_at", "s", "+09:00"), ("move_day", "D", "")):
        key = "posted_at" if col == "posted_at" else "move_date"
        out[key] = {"all": rng(col, np.ones(len(final), dtype=bool), unit, suffix),
                    "train": rng(col, split == "train", unit, suffix),
                    "test": rng(col, split == "test", unit, suffix)}
    return out


def to_json(sheet: DatasheetDict) -> str:
    return json.dumps(sheet, ensure_ascii=False, indent=2) + "\n"


def to_markdown(s: DatasheetDict) -> str:
    p, c, src = s["parameters"], s["counts"], s["source"]
    L: list[str] = []
    L += ["# Datasheet", "",
          f"Built by kofinsent {s['kofinsent_version']} from `{src['db_file']}` "
          f"(sha256 `{src['db_sha256']}`, {src['db_bytes']:,} bytes; {src['posts_in_db']:,} posts of "
          f"{src['stocks_with_posts']} stocks).", ""]
    if src.get("wal_pending"):
        L += ["**Warning:** the db had un-checkpointed writes (a `-wal` file) when it was read: another process was "
              "writing, and the hash covers only the main file.", ""]
    L += ["## Label rule", "", f"`{p['rule']}` — {s['label_rule']['text']}", "",
          "`[상승]` = close above the previous trading day's close, `[하락]` = below; equal closes are excluded. "
          "Closes are the crawler's adjusted (수정주가) closes; a stored bar with volume 0 counts as a non-trading day. "
          "Each record keeps `move_date`, `close_prev`, `close` and `return` so any label can be checked by hand.", ""]
    L += ["## Parameters", "", "| parameter | value |", "|---|---|"]
    for k, v in p.items():
        if k == "relevance_filter" and v is not None:
            v = f"{v['file']} (sha256 {v['sha256'][:12]}…; rules: {', '.join(v['rules'])})"
        L.append(f"| {k} | {_md(v)} |")
    seeds = s["seeds"]
    L += ["", f"Seeds: `{seeds['seed']}`; sampling draws from `numpy.random.default_rng({seeds['sampling_rng']})`, "
          f"the random split from `default_rng({seeds['split_rng']})`, both after sorting by "
          "(code, posted_at, nid).", ""]
    L += ["## From db to files", "", "| step | rows removed | rows left |", "|---|---:|---:|"]
    for f in s["funnel"]:
        removed = "" if f["removed"] is None else f"{f['removed']:,}"
        L.append(f"| {f['step']} | {removed} | {f['rows']:,} |")
    L += ["", "Why rows were removed:", ""]
    for reason, n in s["removed"].items():
        text = REASON_TEXT.get(reason)
        if text is None and reason.startswith("relevance:"):
            text = "relevance filter rule `" + reason.split(":", 1)[1] + "`"
        L.append(f"- `{reason}` ({n:,}): {text}")
    if s["relevance_filter"]:
        L += ["", "Relevance filter (rules in file order; `removed` = first matching rule, `matched` = independent):",
              "", "| rule | removed | matched |", "|---|---:|---:|"]
        for name, r in s["relevance_filter"].items():
            L.append(f"| {name} | {r['removed']:,} | {r['matched']:,} |")
    smp = s["sampling"]
    L += ["", "## Sampling and split", "",
          f"Available labelled posts: {_labels(smp['available'])}; requested per label: "
          f"{smp['requested_per_label'] or 'all (--per-label 0)'}; taken: {_labels(smp['taken_per_label'])}.", ""]
    sp = s["split"]
    how = (f"chronological, test = posts on/after {sp['cutoff']}" if sp.get("cutoff") else
           f"{sp['split']}, test fraction {sp['test_size']} (target {sp['test_target']} rows)")
    extras = [x for x, on in (("stratified by stock", sp["stratify_stock"]), ("grouped by KST day", sp["group_by_day"]))
              if on]
    L.append(f"Split: {how}{'; ' + ', '.join(extras) if extras else ''}.")
    if sp.get("train_last_posted_at"):
        L.append(f"Last train post {sp['train_last_posted_at']}, first test post {sp['test_first_posted_at']}.")
    L += ["", "## Counts", "", "| split | " + " | ".join(LABELS) + " | total |", "|---|---:|---:|---:|"]
    for sname in ("train", "test"):
        row = c["by_split_label"][sname]
        L.append(f"| {sname} | " + " | ".join(f"{row[lab]:,}" for lab in LABELS) + f" | {c['by_split'][sname]:,} |")
    L.append("| all | " + " | ".join(f"{c['by_label'][lab]:,}" for lab in LABELS) + f" | {c['total']:,} |")
    L += ["", "Per stock:", "", "| code | name | train | test | " + " | ".join(LABELS) + " | total |",
          "|---|---|---:|---:|---:|---:|---:|"]
    for code, r in c["by_stock"].items():
        L.append(f"| {code} | {_md(r['name'])} | {r['train']:,} | {r['test']:,} | "
                 + " | ".join(f"{r[lab]:,}" for lab in LABELS) + f" | {r['total']:,} |")
    L += ["", "Per year (of posted_at):", "", "| year | train | test | " + " | ".join(LABELS) + " | total |",
          "|---|---:|---:|---:|---:|---:|"]
    for y, r in c["by_year"].items():
        L.append(f"| {y} | {r['train']:,} | {r['test']:,} | " + " | ".join(f"{r[lab]:,}" for lab in LABELS)
                 + f" | {r['total']:,} |")
    dr = s["date_range"]
    L += ["", "## Date range", "", "| | posted_at (KST) | move_date |", "|---|---|---|"]
    for part in ("all", "train", "test"):
        L.append(f"| {part} | {_span(dr['posted_at'][part])} | {_span(dr['move_date'][part])} |")
    L += ["", "## Prices used", "", "| code | first traded day | last traded day | traded bars | zero-volume bars |",
          "|---|---|---|---:|---:|"]
    for code, r in s["prices"].items():
        L.append(f"| {code} | {_md(r['first_price_day'])} | {_md(r['last_price_day'])} | {r['traded_bars']:,} | "
                 f"{r['zero_volume_bars']:,} |")
    L += ["", "## Files", "", "| file | rows | sha256 |", "|---|---:|---|"]
    for name, f in s["files"].items():
        L.append(f"| {name} | {f['rows']:,} | `{f['sha256']}` |")
    L += ["", "Records are sorted by (posted_at, code, nid); shuffle when training. Load with "
          "`datasets.load_dataset(\"parquet\", data_files={\"train\": \"train.parquet\", \"test\": \"test.parquet\"})` "
          "to get every field exactly as written. `load_dataset(\"json\", ...)` works too, but pyarrow's type "
          "inference turns `posted_at` and `move_date` into naive **UTC** timestamps (a 08:00 KST post shows the "
          "previous day): convert back, or read the JSONL with `json`/pandas.", "",
          ("`returns.jsonl` is the price calendar the labels were made from: one line per stock and traded day of "
           "the stored prices (code, date, close_prev, close, return = close / close_prev - 1; close_prev and return "
           "are null on a stock's first stored bar). A record's `return` is the line of its (code, move_date); the "
           "report reads the next session's return from it."), ""]
    return "\n".join(L)


def _labels(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in d.items())


def _span(r: list[str] | None) -> str:
    return "—" if r is None else f"{r[0]} .. {r[1]}"


def _md(v: object) -> str:
    if v is None:
        return "—"
    return str(v).replace("|", "\\|")

