"""Every number in report.md is the number in the run's files: parsed out of the Markdown, matched to its entry in
report.json, and that entry's source pointer resolved in the actual metrics.json (or config / datasheet /
predictions file) and formatted again."""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from kofinsent.report.cite import FORMATS

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?%?")
CELL_SPLIT = re.compile(r"(?<!\\)\|")


def md_tables(md: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows) for each pipe table, cells with the bold markers removed."""
    tables, block = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in CELL_SPLIT.split(line.strip())[1:-1]])
        elif block:
            tables.append((block[0], [[c.removeprefix("**").removesuffix("**") for c in r] for r in block[2:]]))
            block = []
    return tables


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


_DERIVED: dict[str, Any] = {}


def rederive(source: dict[str, Any], runs: dict[str, Path]) -> Any:
    """A computed number, recomputed from what its source names: the files it read (read here, not by the report
    code), the kofinsent.evaluation.analysis function and its arguments; Holm from statsmodels on the family's
    p-values, each resolved in its own file."""
    params, derive = source.get("params") or {}, source["derive"]
    if derive in ("holm", "family_size"):
        from statsmodels.stats.multitest import multipletests

        ps = [resolve(m, runs) for m in params["family"]]
        return len(ps) if derive == "family_size" else float(multipletests(ps, method="holm")[1][source["key"][0]])
    cache_key = json.dumps([source["run"], derive, source["inputs"], params], sort_keys=True)
    if cache_key not in _DERIVED:
        from kofinsent.evaluation import analysis
        from kofinsent.evaluation.clusters import Bootstrap

        root = runs[source["run"]]
        args: dict[str, Any] = {}
        for role, file in source["inputs"].items():
            rows = _read(root / file)
            args[role] = {str(r["id"]): r for r in rows} if role == "items" else rows
        kwargs = {k: Bootstrap(**v) if k == "boot" else v for k, v in params.items()}
        _DERIVED[cache_key] = getattr(analysis, derive)(**args, **kwargs)
    data = _DERIVED[cache_key]
    for k in source["key"]:
        data = data[k]
    return data


def resolve(source: dict[str, Any], runs: dict[str, Path]) -> Any:
    """The value a source pointer names, read straight from the file (independent of the report code)."""
    if source.get("derive") not in (None, "diff", "len"):
        return rederive(source, runs)
    path = runs[source["run"]] / source["file"]
    if path.suffix == ".jsonl":
        lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        hits = [r for r in lines if all(r.get(k) == v for k, v in source["record"].items())]
        assert len(hits) == 1, (source, len(hits))
        data = hits[0]
    elif path.suffix == ".toml":
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    else:
        data = json.loads(path.read_text(encoding="utf-8"))
    for k in source["key"]:
        data = data[k]
    if source.get("derive") == "diff":
        data = data[0] - data[1]
    elif source.get("derive") == "len":
        data = len(data)
    return data


def check_number(num: dict[str, Any], runs: dict[str, Path]) -> None:
    value = resolve(num["source"], runs)
    assert value == num["value"], num
    assert FORMATS[num["format"]](value) == num["text"], num


def test_formats_print_what_a_reader_expects():
    assert FORMATS["pct"](0.49333) == "49.3%" and FORMATS["pp"](0.45678) == "45.7"
    assert FORMATS["p"](0.0123) == "0.012" and FORMATS["p"](3.2e-05) == "3.2e-05"
    assert FORMATS["g"](2e-4) == "0.0002" and FORMATS["int"](300) == "300" and FORMATS["f3"](-0.1) == "-0.100"


def test_every_number_in_the_markdown_tables_comes_from_the_run_files(demo_report):
    rj = demo_report.json
    runs = {r["label"]: Path(r["path"]) for r in rj["runs"]}
    expected = rj["tables"] + rj["examples"]
    found = [t for t in md_tables(demo_report.md) if t[0] != ["Run", "Directory", "Synthetic"]]
    assert [h for h, _ in found] == [[c["name"].replace("[", "\\[").replace("]", "\\]") for c in t["columns"]]
                                     for t in expected]
    checked = 0
    for (header, rows), table in zip(found, expected):
        assert len(rows) == len(table["rows"]), table["id"]
        for md_row, js_row in zip(rows, table["rows"]):
            assert len(md_row) == len(header)
            for col, md_cell, js_cell in zip(table["columns"], md_row, js_row):
                if not col["numeric"]:
                    assert js_cell["numbers"] == [], (table["id"], col["name"])
                    continue
                # Every number printed in a numeric cell has a sourced entry, and nothing else is printed.
                shown = NUMBER.findall(md_cell)
                sourced = [t for n in js_cell["numbers"] for t in NUMBER.findall(n["text"])]
                assert shown == sourced, (table["id"], col["name"], md_cell, js_cell)
                assert shown or md_cell in ("n/a", "—"), (table["id"], col["name"], md_cell)
                for n in js_cell["numbers"]:
                    check_number(n, runs)
                    checked += 1
    assert checked > 100


def test_main_table_values_equal_metrics_json(demo_report):
    """The same, spelled out for one row: the log-likelihood run's accuracy, interval and n."""
    metrics = json.loads((demo_report.run / "eval/ll_2shot/metrics.json").read_text(encoding="utf-8"))
    header, rows = next(t for t in md_tables(demo_report.md) if t[0][0] == "Model" and "Method" in t[0])
    row = dict(zip(header, next(r for r in rows if r[0] == "ll\\_2shot")))
    lo, hi = metrics["accuracy_ci95"]
    assert row["Accuracy \\[95% CI\\]"] == (f"{100 * metrics['accuracy']:.1f}% \\[{100 * lo:.1f}, "
                                            f"{100 * hi:.1f}\\]")
    assert row["n"] == str(metrics["n"]) and row["MCC"] == f"{metrics['mcc']:.3f}"
    assert row["Source"] == "demo/20250102T030405Z-abc1234:eval/ll\\_2shot"


def test_best_accuracy_is_bold(demo_report):
    main = demo_report.json["tables"][0]
    accs = [row[5]["numbers"][0]["value"] for row in main["rows"]]
    bold = [bool(row[5].get("bold")) for row in main["rows"]]
    assert bold == [a == max(accs) for a in accs] and any(bold)


def test_methods_numbers_are_in_the_text_and_from_the_configs(demo_report):
    rj = demo_report.json
    runs = {r["label"]: Path(r["path"]) for r in rj["runs"]}
    files = set()
    for block in rj["methods"]:
        for para in block["paragraphs"]:
            assert para["text"] in demo_report.md.replace("\\_", "_").replace("\\[", "[").replace("\\]", "]")
            for n in para["numbers"]:
                assert n["text"] in para["text"]
                check_number(n, runs)
                files.add(n["source"]["file"])
    assert {"config.toml", "dataset/datasheet.json", "train/lora/config.json", "train/lora/metrics.json",
            "eval/kshot_5/config.json"} <= files


def test_report_json_numbers_list_every_shown_number(demo_report):
    rj = demo_report.json
    per_cell = sum(len(c["numbers"]) for t in rj["tables"] + rj["examples"] for row in t["rows"] for c in row)
    per_para = sum(len(p["numbers"]) for b in rj["methods"] for p in b["paragraphs"])
    assert len(rj["numbers"]) == per_cell + per_para
    assert all({"text", "value", "source", "where"} <= set(n) for n in rj["numbers"])


def test_kshot_table_has_seed003_layout_with_mean_sd_and_n(demo_report):
    kshot = next(t for t in demo_report.json["tables"] if t["id"] == "kshot")
    assert [c["name"] for c in kshot["columns"]] == ["Model", "0-shot", "5-shot", "10-shot", "50-shot", "Source"]
    metrics = json.loads((demo_report.run / "eval/kshot_5/metrics.json").read_text(encoding="utf-8"))
    summary = metrics["fewshot_accuracy"]
    assert summary["n"] == 3 and len(metrics["per_prompt"]) == 3
    cell = kshot["rows"][0][2]["text"]
    assert cell == (f"{100 * summary['mean']:.1f} ± {100 * summary['sd']:.1f} (n={metrics['n_items']}, 3 seeds)")
    assert kshot["rows"][0][3]["text"] == "—"


def test_sentiment_and_compare_tables(demo_report):
    tables = {t["id"]: t for t in demo_report.json["tables"]}
    sent = tables["sentiment"]
    assert [row[1]["text"] for row in sent["rows"]] == ["q4_k_m", "f16"]
    cmp = json.loads((demo_report.run / "compare/sent_q4__sent_f16.json").read_text(encoding="utf-8"))
    row = tables["compare_sentiment"]["rows"][0]
    names = [c["name"] for c in tables["compare_sentiment"]["columns"]]
    assert row[names.index("Brown–Forsythe p")]["numbers"][0]["value"] == cmp["levene_p"]
    assert row[names.index("Welch p")]["numbers"][0]["value"] == cmp["welch_p"]
    assert row[names.index("Wilcoxon, item variances p")]["numbers"][0]["value"] == cmp["paired_variance_wilcoxon_p"]
    mc = tables["compare"]["rows"][0]
    names = [c["name"] for c in tables["compare"]["columns"]]
    assert mc[names.index("McNemar p")]["numbers"][0]["value"] == cmp["mcnemar_p"]
    assert mc[names.index("McNemar mid-p")]["numbers"][0]["value"] == cmp["mcnemar_midp"]
    assert [n["value"] for n in mc[names.index("Accuracy A - B [95% CI] (pp)")]["numbers"]] == [
        cmp["accuracy_diff"], *cmp["accuracy_diff_ci95"]]
