"""build_dataset end to end on crawler dbs written by the tests: labels, sampling, splits, files, datasheet, errors."""
from __future__ import annotations

import json
import unicodedata
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from crawler.errors import StoreError
from crawler.records import Post
from kofinsent.dataset.build import build_dataset
from kofinsent.dataset.errors import DatasetConfigError, EmptyDatasetError, MissingPricesError, TooFewPostsError
from kofinsent.dataset.files import COLUMNS
from kofinsent.runs import read_jsonl, sha256_file

FILES = ["train.jsonl", "test.jsonl", "train.parquet", "test.parquet", "returns.jsonl", "datasheet.json",
         "datasheet.md"]
EXAMPLE_RULES = Path(__file__).resolve().parents[2] / "kofinsent" / "dataset" / "relevance_example.toml"


def build(db: Path, out: Path, rule: str = "next-session", **kw):
    kw.setdefault("per_label", 0)
    return build_dataset(db, out, rule, progress=False, **kw)


def rows(out: Path) -> tuple[list[dict], list[dict]]:
    return list(read_jsonl(out / "train.jsonl")), list(read_jsonl(out / "test.jsonl"))


@pytest.mark.parametrize("rule", ["same-day", "next-session"])
def test_hand_db_records_match_hand_labels(hand, hand_db, tmp_path, rule):
    sheet = build(hand_db, tmp_path / "out", rule, test_size=0.25)
    train, test = rows(tmp_path / "out")
    got = {int(r["nid"]): r for r in train + test}
    col = {"same-day": 3, "next-session": 4}[rule]
    for i, case in enumerate(hand.cases):
        want, rec = case[col], got.get(1000 + i)
        if isinstance(want, str):
            assert rec is None, case[0]
            continue
        label, move, prev, close = want
        assert rec is not None, case[0]
        assert (rec["label"], rec["move_date"], rec["close_prev"], rec["close"]) == (label, move, prev, close)
        assert rec["return"] == pytest.approx(close / prev - 1, abs=0, rel=1e-15)
        assert rec["posted_at"] == case[2] + "+09:00" and rec["rule"] == rule
        assert rec["id"] == f"{case[1]}-{1000 + i}" and rec["nid"] == str(1000 + i)
        assert rec["name"] == hand.names[case[1]]
    reasons = Counter(c[col] for c in hand.cases if isinstance(c[col], str))
    for reason in ("non_trading_day", "no_previous_close", "flat"):
        assert sheet["removed"][reason] == reasons[reason]


def test_returns_file_is_the_price_calendar_by_hand(hand, hand_db, tmp_path):
    """returns.jsonl: one line per stock and traded day (halt bars left out), the previous traded close, null on a
    stock's first bar, and each record's return is the line of its (code, move_date)."""
    sheet = build(hand_db, tmp_path / "out", "next-session", test_size=0.25)
    lines = list(read_jsonl(tmp_path / "out" / "returns.jsonl"))
    traded = [(c, d, close) for c, d, close, volume in hand.bars if volume > 0]
    assert [(r["code"], r["date"], r["close"]) for r in lines] == sorted(traded)
    assert list(lines[0]) == ["code", "date", "close_prev", "close", "return"]
    by = {(r["code"], r["date"]): r for r in lines}
    first = {c: min(d for cc, d, _ in traded if cc == c) for c in (hand.A, hand.B)}
    for (c, d), r in by.items():
        assert (r["close_prev"] is None) == (d == first[c]) == (r["return"] is None)
    # 2021-09-28 (hand.A) is a halt stored with volume 0: the 29th's previous close is the 27th's
    assert (hand.A, "2021-09-28") not in by
    assert by[(hand.A, "2021-09-29")]["close_prev"] == 105 and by[(hand.A, "2021-09-29")]["return"] == 107 / 105 - 1
    train, test = rows(tmp_path / "out")
    for rec in train + test:
        line = by[(rec["code"], rec["move_date"])]
        assert (line["close_prev"], line["close"], line["return"]) == (rec["close_prev"], rec["close"], rec["return"])
    assert sheet["files"]["returns.jsonl"]["rows"] == len(lines)
    assert sheet["files"]["returns.jsonl"]["sha256"] == sha256_file(tmp_path / "out" / "returns.jsonl")
    assert "returns.jsonl" in (tmp_path / "out" / "datasheet.md").read_text("utf-8")


def test_balanced_sample_and_datasheet_counts_equal_files(synth_db, tmp_path):
    out = tmp_path / "out"
    sheet = build(synth_db, out, per_label=400, test_size=0.1)
    train, test = rows(out)
    both = train + test
    assert Counter(r["label"] for r in both) == {"[상승]": 400, "[하락]": 400}
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert list(train[0]) == list(COLUMNS)

    on_disk = json.loads((out / "datasheet.json").read_text("utf-8"))
    assert on_disk == sheet
    c = sheet["counts"]
    assert c["total"] == len(both) and c["by_split"] == {"train": len(train), "test": len(test)}
    for part, recs in (("train", train), ("test", test)):
        assert c["by_split_label"][part] == {k: Counter(r["label"] for r in recs)[k] for k in ("[상승]", "[하락]")}
    by_stock = Counter(r["code"] for r in both)
    assert {k: v["total"] for k, v in c["by_stock"].items()} == dict(by_stock)
    assert {k: v["test"] for k, v in c["by_stock"].items()} == {k: sum(r["code"] == k for r in test) for k in by_stock}
    assert {k: v["total"] for k, v in c["by_year"].items()} == dict(Counter(r["posted_at"][:4] for r in both))
    for name, f in sheet["files"].items():
        assert f["sha256"] == sha256_file(out / name)
        if name == "returns.jsonl":
            assert f["rows"] == len(list(read_jsonl(out / name)))
            continue
        assert f["rows"] == (len(train) if name.startswith("train") else len(test))
    assert sum(sheet["removed"].values()) + c["total"] == sheet["source"]["posts_in_db"] == 3000
    assert sheet["funnel"][-1]["rows"] == c["total"]
    assert sheet["source"]["db_sha256"] == sha256_file(synth_db)
    assert sheet["sampling"]["taken_per_label"] == {"[상승]": 400, "[하락]": 400}
    assert sheet["date_range"]["posted_at"]["all"][0] == min(r["posted_at"] for r in both)
    md = (out / "datasheet.md").read_text("utf-8")
    assert "| train |" in md and sheet["source"]["db_sha256"] in md


def test_per_label_zero_keeps_every_labelled_post(synth_db, tmp_path):
    sheet = build(synth_db, tmp_path / "out", per_label=0)
    assert sheet["counts"]["by_label"] == sheet["sampling"]["available"]
    assert sheet["removed"]["not_sampled"] == 0


def test_same_inputs_and_seed_give_identical_bytes(synth_db, tmp_path):
    kw = dict(per_label=300, test_size=0.2, seed=7)
    build(synth_db, tmp_path / "a", **kw)
    build(synth_db, tmp_path / "b", **kw)
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    build(synth_db, tmp_path / "c", **{**kw, "seed": 8})
    assert (tmp_path / "a" / "train.jsonl").read_bytes() != (tmp_path / "c" / "train.jsonl").read_bytes()


def test_sample_does_not_depend_on_split_options(synth_db, tmp_path):
    build(synth_db, tmp_path / "r", per_label=300, split="random")
    build(synth_db, tmp_path / "c", per_label=300, split="chronological")
    ids = [{r["id"] for part in rows(tmp_path / d) for r in part} for d in ("r", "c")]
    assert ids[0] == ids[1]


def test_chronological_split_has_no_time_overlap(synth_db, tmp_path):
    sheet = build(synth_db, tmp_path / "out", per_label=500, split="chronological", test_size=0.2)
    train, test = rows(tmp_path / "out")
    assert max(r["posted_at"] for r in train) < min(r["posted_at"] for r in test)
    assert abs(len(test) - 200) <= 2
    assert sheet["split"]["train_last_posted_at"] < sheet["split"]["test_first_posted_at"]


def test_cutoff_split(synth_db, tmp_path):
    build(synth_db, tmp_path / "out", split="chronological", cutoff="2021-11-01")
    train, test = rows(tmp_path / "out")
    assert all(r["posted_at"] < "2021-11-01" for r in train)
    assert all(r["posted_at"] >= "2021-11-01" for r in test) and test


@pytest.mark.parametrize("split", ["random", "chronological"])
def test_day_grouped_split_puts_each_day_on_one_side(synth_db, tmp_path, split):
    build(synth_db, tmp_path / "out", per_label=500, split=split, test_size=0.15, group_by_day=True)
    train, test = rows(tmp_path / "out")
    train_days, test_days = ({r["posted_at"][:10] for r in part} for part in (train, test))
    assert train_days and test_days and not train_days & test_days
    assert 0.05 < len(test) / (len(train) + len(test)) < 0.25
    if split == "chronological":
        assert max(train_days) < min(test_days)


@pytest.mark.parametrize("split", ["random", "chronological"])
def test_stratified_split_matches_each_stock_share(synth_db, tmp_path, split):
    sheet = build(synth_db, tmp_path / "out", per_label=400, split=split, test_size=0.1, stratify_stock=True)
    for code, r in sheet["counts"]["by_stock"].items():
        assert abs(r["test"] - r["total"] * 0.1) <= 2, code
    if split == "random":
        train, test = rows(tmp_path / "out")
        per_stratum = Counter((r["code"], r["label"]) for r in test)
        total = Counter((r["code"], r["label"]) for r in train + test)
        assert all(abs(per_stratum[k] - n * 0.1) < 1 for k, n in total.items())


def test_cleaning_normalises_titles_and_drops_blind_and_empty(hand, tmp_path):
    nfd = unicodedata.normalize("NFD", "삼성 가즈아")
    posts = [
        Post(hand.A, 1, datetime(2021, 9, 14, 10), f"  {nfd}\u3000\u200b!!\n"),
        Post(hand.A, 2, datetime(2021, 9, 14, 11), " \t\u3000 "),
        Post(hand.A, 3, datetime(2021, 9, 14, 12), "숨김", is_blind=True),
    ]
    db = hand.write_db(tmp_path / "c.db", posts, hand.bars, hand.names)
    with pytest.raises(EmptyDatasetError):  # one post left: too few to split, and nothing written
        build(db, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    db2 = hand.write_db(tmp_path / "c2.db", posts + [Post(hand.A, 4, datetime(2021, 9, 16, 9), "하락")],
                        hand.bars, hand.names)
    sheet = build(db2, tmp_path / "out", test_size=0.5)
    titles = {r["nid"]: r["title"] for part in rows(tmp_path / "out") for r in part}
    assert titles["1"] == "삼성 가즈아 !!" and unicodedata.is_normalized("NFC", titles["1"])
    assert sheet["removed"]["blind"] == 1 and sheet["removed"]["empty_title"] == 1


def test_dedupe_within_stock(synth_db, tmp_path):
    plain = build(synth_db, tmp_path / "plain")
    deduped = build(synth_db, tmp_path / "dedup", dedupe=True)
    assert plain["removed"]["duplicate_title"] == 0 and deduped["removed"]["duplicate_title"] > 0
    recs = [r for part in rows(tmp_path / "dedup") for r in part]
    assert len({(r["code"], r["title"]) for r in recs}) == len(recs)
    assert deduped["counts"]["total"] == plain["counts"]["total"] - deduped["removed"]["duplicate_title"]


def test_relevance_filter_counts_each_rule(synth_db, tmp_path):
    plain = build(synth_db, tmp_path / "plain")
    sheet = build(synth_db, tmp_path / "out", relevance_filter=EXAMPLE_RULES)
    report = sheet["relevance_filter"]
    assert list(report) == ["politics", "ads", "off_topic"]
    assert report["politics"]["removed"] > 0 and sheet["removed"]["relevance:politics"] == report["politics"]["removed"]
    assert all(not r["title"].startswith("대통령") for part in rows(tmp_path / "out") for r in part)
    assert plain["relevance_filter"] is None and "relevance:politics" not in plain["removed"]
    assert sum(sheet["removed"].values()) + sheet["counts"]["total"] == 3000
    assert sheet["parameters"]["relevance_filter"]["file"] == "relevance_example.toml"


def test_relevance_filter_file_errors(synth_db, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nname = "x"\nkeyword = ["a"]\n', encoding="utf-8")
    with pytest.raises(DatasetConfigError, match="unknown keys"):
        build(synth_db, tmp_path / "out", relevance_filter=bad)
    bad.write_text('[[rules]]\nname = "x"\npatterns = ["("]\n', encoding="utf-8")
    with pytest.raises(DatasetConfigError, match="bad pattern"):
        build(synth_db, tmp_path / "out", relevance_filter=bad)
    assert not (tmp_path / "out").exists()


def test_files_load_with_datasets(synth_db, tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "out"
    build(synth_db, out, per_label=200, test_size=0.1)
    cache = str(tmp_path / "hf-cache")
    js = datasets.load_dataset("json", data_files={"train": str(out / "train.jsonl"), "test": str(out / "test.jsonl")},
                               cache_dir=cache)
    pq = datasets.load_dataset("parquet", data_files={"train": str(out / "train.parquet"),
                                                      "test": str(out / "test.parquet")}, cache_dir=cache)
    assert js["train"].num_rows + js["test"].num_rows == 400
    assert js["train"].column_names == list(COLUMNS) == pq["train"].column_names
    assert pq["test"].to_list() == list(read_jsonl(out / "test.jsonl"))  # Parquet: the records exactly as written
    # The json loader (pyarrow's type inference) reads the ISO strings as naive *UTC* timestamps, as the
    # datasheet warns; every other column comes back as written.
    first_js, first = js["test"][0], list(read_jsonl(out / "test.jsonl"))[0]
    kst = datetime.fromisoformat(first["posted_at"])
    assert first_js["posted_at"] == kst.astimezone(timezone.utc).replace(tzinfo=None)
    same = [c for c in COLUMNS if c not in ("posted_at", "move_date")]
    assert [{c: r[c] for c in same} for r in js["test"]] == [{c: r[c] for c in same} for r in pq["test"]]


# -- errors ---------------------------------------------------------------------------------------------------------
def test_missing_prices_names_stock_and_dates_and_writes_nothing(hand, tmp_path):
    posts = hand.posts() + [Post(hand.A, 1, datetime(2021, 10, 2, 12), "토요일"),
                            Post("035720", 2, datetime(2021, 9, 14, 10), "카카오")]
    db = hand.write_db(tmp_path / "m.db", posts, hand.bars, hand.names)
    with pytest.raises(MissingPricesError) as e:
        build(db, tmp_path / "out", "same-day")
    msg = str(e.value)
    assert "005930 (삼성전자): 1 posts dated 2021-10-02 need prices outside the stored 2021-09-13..2021-10-01" in msg
    assert "035720: no traded price bars at all; 1 posts dated 2021-09-14" in msg
    assert "--allow-missing-prices" in msg and not (tmp_path / "out").exists()
    sheet = build(db, tmp_path / "out", "same-day", allow_missing_prices=True)
    assert sheet["removed"]["missing_prices"] == 2


def test_too_few_per_label_gives_available_counts(synth_db, tmp_path):
    with pytest.raises(TooFewPostsError) as e:
        build(synth_db, tmp_path / "out", per_label=5000)
    plain = build(synth_db, tmp_path / "all")
    up, down = plain["sampling"]["available"]["[상승]"], plain["sampling"]["available"]["[하락]"]
    assert f"asked for 5000 per label, available [상승] {up}, [하락] {down}" in str(e.value)
    assert e.value.available == {"[상승]": up, "[하락]": down}
    assert not (tmp_path / "out").exists()
    sheet = build(synth_db, tmp_path / "fewer", per_label=5000, allow_fewer=True)
    assert sheet["counts"]["by_label"] == {"[상승]": min(up, down), "[하락]": min(up, down)}


def test_empty_result_writes_nothing(hand, tmp_path):
    weekend = [Post(hand.A, i, datetime(2021, 9, 18, 10 + i), f"주말 {i}") for i in range(3)]
    db = hand.write_db(tmp_path / "w.db", weekend, hand.bars, hand.names)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("untouched")
    with pytest.raises(EmptyDatasetError, match="no labelled posts left from 3 .*non_trading_day 3"):
        build(db, out, "same-day")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    empty = hand.write_db(tmp_path / "e.db", [], hand.bars)
    with pytest.raises(EmptyDatasetError, match="the db has no posts"):
        build(empty, tmp_path / "out2")


def test_empty_split_side_is_an_error(synth_db, tmp_path):
    with pytest.raises(EmptyDatasetError, match="test split would be empty"):
        build(synth_db, tmp_path / "out", split="chronological", cutoff="2030-01-01")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kw, match", [
    (dict(split="random", cutoff="2021-06-01"), "--cutoff needs --split chronological"),
    (dict(split="chronological", cutoff="June"), "is not a date"),
    (dict(split="chronological", cutoff="2021-06-01", stratify_stock=True), "no effect with --cutoff"),
    (dict(stratify_stock=True, group_by_day=True), "cannot be combined"),
    (dict(test_size=1.0), "between 0 and 1"),
    (dict(per_label=-1), "per-label must be >= 0"),
    (dict(split="weekly"), "unknown split"),
])
def test_bad_options(synth_db, tmp_path, kw, match):
    with pytest.raises(DatasetConfigError, match=match):
        build(synth_db, tmp_path / "out", **kw)


def test_bad_db_paths(tmp_path):
    with pytest.raises(DatasetConfigError, match="no such db file"):
        build(tmp_path / "nope.db", tmp_path / "out")
    assert not (tmp_path / "nope.db").exists()  # Store would have created it
    other = tmp_path / "other.db"
    import sqlite3
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreError, match="not a kofinsent crawler db"):
        build(other, tmp_path / "out")


def test_stock_without_a_name_exports_null(hand, tmp_path):
    db = hand.write_db(tmp_path / "n.db", hand.posts(), hand.bars)  # no stocks rows: names unknown
    build(db, tmp_path / "out", "next-session", test_size=0.3)
    train = list(read_jsonl(tmp_path / "out" / "train.jsonl"))
    assert train and all(r["name"] is None for r in train)
    import pyarrow.parquet as pq
    assert set(pq.read_table(tmp_path / "out" / "train.parquet").column("name").to_pylist()) == {None}
