"""The methods paragraphs, generated from what the runs recorded (config.toml, datasheet.json, train and eval
config.json, environment.json). Numbers are sourced like the tables'; strings (model refs such as "@models/neox",
paths, dates) are printed as the files hold them."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kofinsent.report.cite import Part, Source, Text, lookup
from kofinsent.report.collect import TEACHER_SHEET, Run, Step, Train
from kofinsent.report.paired import Family

PACKAGES_SHOWN = ("kofinsent", "torch", "transformers", "peft", "bitsandbytes", "llama_cpp_python", "ollama",
                  "scikit-learn", "kiwipiepy")


class _Para:
    """Builds one paragraph of text and sourced numbers."""

    def __init__(self) -> None:
        self.parts: list[Part] = []

    def add(self, *parts: Part | None) -> _Para:
        self.parts.extend(p for p in parts if p is not None)
        return self

    def value(self, src: Source, key: Sequence[str | int], fmt: str = "g") -> Part | None:
        """A number as a sourced Num; a string or bool as written; None when absent."""
        v = lookup(src.data, key)
        if isinstance(v, bool) or v is None:
            return None if v is None else str(v).lower()
        if isinstance(v, (int, float)):
            return src.num(key, fmt)
        return str(v)

    def text(self) -> Text:
        return Text(self.parts)


def _first(*sources: tuple[Source, Sequence[str | int]]) -> tuple[Source, Sequence[str | int]] | None:
    """The first (source, key) whose value exists: resolved files before the experiment's config.toml."""
    for src, key in sources:
        if lookup(src.data, key) is not None:
            return src, key
    return None


def _data_paragraph(run: Run) -> Text | None:
    toml = run.src("config.toml", run.config)
    sheet = run.src("dataset/datasheet.json", run.datasheet or {})
    ds = run.config.get("dataset", {})
    if not ds and run.datasheet is None:
        return None
    p = _Para()
    if run.synthetic:
        rp = run.config.get("replay", {})
        p.add("SYNTHETIC DATA: the titles and prices come from kofinsent's deterministic replay forum, not from "
              "Naver")
        if rp:
            p.add(" (replay seed ", p.value(toml, ("replay", "seed"), "int"), ", ",
                  p.value(toml, ("replay", "posts_per_day"), "g"), " posts per day", ")")
        p.add(". ")
    by_stock = (run.datasheet or {}).get("counts", {}).get("by_stock") or {}
    if by_stock:
        stocks = ", ".join(f"{c} {r.get('name') or ''}".strip() for c, r in by_stock.items())
        p.add("Titles of ", sheet.num(("counts", "by_stock"), "int", derive="len"), " stocks (", stocks, ")")
    else:
        codes = run.config.get("crawl", {}).get("codes") or list(run.config.get("replay", {}).get("codes", {}) or [])
        p.add("Titles of the stocks ", ", ".join(map(str, codes)) or "(not recorded)")
    rng = lookup(run.datasheet or {}, ("date_range", "posted_at", "all"))
    if rng:
        p.add(" posted from ", str(rng[0]), " to ", str(rng[1]))
    for sec, a, b in (("crawl", "since", "until"), ("replay", "start", "end")):
        if sec in run.config and a in run.config[sec]:
            p.add(f" ({sec} range ", str(run.config[sec][a]), " to ", str(run.config[sec].get(b, "…")), ")")
    rule = ds.get("rule") or lookup(run.datasheet or {}, ("parameters", "rule"))
    rule_text = lookup(run.datasheet or {}, ("label_rule", "text"))
    p.add(" were labelled with the ", str(rule), " rule", f" ({str(rule_text).rstrip('.')})" if rule_text else "",
          ". ")
    per_label = _first((toml, ("dataset", "per_label")), (sheet, ("parameters", "per_label")))
    if per_label:
        if lookup(per_label[0].data, per_label[1]) == 0:
            p.add("Every labelled title was kept (per_label = ", p.value(*per_label, "int"), "; ")
        else:
            p.add(p.value(*per_label, "int"), " titles per label were requested (")
        taken = lookup(run.datasheet or {}, ("sampling", "taken_per_label"))
        if isinstance(taken, dict) and taken:
            p.add("taken: ", *_join([[lab, " ", sheet.num(("sampling", "taken_per_label", lab), "int")]
                                     for lab in taken]))
        else:
            p.add("no datasheet")
        p.add("); ")
    split = ds.get("split") or lookup(run.datasheet or {}, ("parameters", "split"))
    p.add("the split is ", str(split))
    size = _first((toml, ("dataset", "test_size")), (sheet, ("parameters", "test_size")))
    if size:
        p.add(" with test fraction ", p.value(*size, "g"))
    if ds.get("group_by_day") or lookup(run.datasheet or {}, ("parameters", "group_by_day")):
        p.add(", grouped by KST day")
    seed = _first((toml, ("dataset", "seed")), (sheet, ("seeds", "seed")))
    if seed:
        p.add(" (seed ", p.value(*seed, "int"), ")")
    if run.datasheet:
        p.add(": ", sheet.num(("counts", "by_split", "train"), "int"), " training and ",
              sheet.num(("counts", "by_split", "test"), "int"), " test items")
    p.add(".")
    return p.text()


def teacher_sentence(run: Run) -> Text | None:
    """One sentence on the teacher step (seed 000's data step): the teacher, and the accepted / dropped counts cited
    from teacher/datasheet.json; a stand-in's labels are called SYNTHETIC."""
    sheet = run.teacher
    if not isinstance(sheet, dict) or not isinstance(sheet.get("counts"), dict):
        return None
    src, cfg = run.src(TEACHER_SHEET, sheet), sheet.get("config") or {}
    p = _Para().add("Teacher labels (seed 000's data step): ")
    if sheet.get("synthetic"):
        p.add("SYNTHETIC labels: kofinsent's deterministic stand-in server (", str(cfg.get("model")),
              "), not a language model, ")
    else:
        p.add("the teacher ", str(cfg.get("model")), " through the ", str(cfg.get("backend")), " backend ")
    p.add("answered the evaluator's sentiment chat (format ", str(cfg.get("format")), ", temperature ",
          p.value(src, ("config", "temperature"), "g"), ", up to ", p.value(src, ("config", "max_attempts"), "int"),
          " attempts) for each of ", src.num(("counts", "records"), "int"), " training titles: ",
          src.num(("counts", "accepted"), "int"), " accepted (", src.num(("counts", "accepted_after_retry"), "int"),
          " after a retry) and ", src.num(("counts", "dropped"), "int"), " dropped.")
    return p.text()


def _join(groups: list[list[Part | None]], sep: str = ", ") -> list[Part | None]:
    out: list[Part | None] = []
    for i, g in enumerate(groups):
        if i:
            out.append(sep)
        out.extend(g)
    return out


def _train_paragraph(run: Run, t: Train) -> Text:
    toml = run.src("config.toml", run.config)
    cfg = run.src(f"{t.rel}/config.json", t.config)
    met = run.src(f"{t.rel}/metrics.json", t.metrics)
    tt = ("train", t.name)
    p = _Para()

    def v(key: str, fmt: str = "g") -> Part | None:
        hit = _first((cfg, (key,)), (toml, (*tt, key)))
        return p.value(*hit, fmt) if hit else None

    model = lookup(run.config, (*tt, "model")) or t.config.get("model")
    p.add(f"Fine-tuning ({t.name}): ", str(model), " with LoRA (r = ", v("lora_r", "int"), ", alpha = ",
          v("lora_alpha", "int"), ", dropout = ", v("lora_dropout"), ") on ")
    bits = ("8-bit" if (t.config.get("load_in_8bit") or lookup(run.config, (*tt, "load_in_8bit"))) else
            "4-bit" if (t.config.get("load_in_4bit") or lookup(run.config, (*tt, "load_in_4bit"))) else None)
    p.add(f"{bits} quantized (bitsandbytes)" if bits else "unquantized", " base weights, learning rate ", v("lr"))
    steps = v("max_steps", "int")
    p.add(", ", *((steps, " steps") if steps is not None else (v("epochs"), " epochs")))
    p.add(", batch size ", v("batch_size", "int"), ", loss ", str(t.config.get("loss") or
                                                                  lookup(run.config, (*tt, "loss")) or "full"),
          ", seed ", v("seed", "int"))
    if t.metrics:
        p.add("; it ran ", met.num(("global_step",), "int"), " steps (train loss ", met.num(("train_loss",), "f3"))
        if met.num(("val_loss",), "f3"):
            p.add(", validation loss ", met.num(("val_loss",), "f3"))
        if met.num(("val_accuracy",), "pct"):
            p.add(", validation accuracy ", met.num(("val_accuracy",), "pct"), " on n = ",
                  met.num(("val_n",), "int"))
        p.add(")")
    p.add(".")
    return p.text()


def _models_paragraph(run: Run) -> Text | None:
    models = run.config.get("models") or {}
    if not models:
        return None
    toml = run.src("config.toml", run.config)
    p = _Para().add("Models built locally for this run: ")
    groups: list[list[Part | None]] = []
    for name, spec in models.items():
        if not isinstance(spec, dict):
            continue
        kv = _join([[k, " = ", p.value(toml, ("models", name, k), "g")] for k, val in spec.items()
                    if isinstance(val, (str, int, float, bool))])
        groups.append([name, " (", *kv, ")"])
    return p.add(*_join(groups, "; "), ".").text()


def eval_sentence(step: Step) -> Text:
    cfg = step.config_src
    p = _Para()
    if step.kind == "baseline":
        what = {"majority": "the majority class of the training labels",
                "tfidf_kiwi": "TF-IDF (Kiwi morpheme uni- and bigrams) + logistic regression",
                "tfidf_char": "TF-IDF (character 1-3-grams) + logistic regression"}.get(step.name, step.name)
        p.add(f"Baseline {step.name}: {what}, fitted on ", step.metrics_src.num(("n_train",), "int"),
              " training titles, seed ", p.value(cfg, ("seed",), "int"), ".")
        return p.text()
    p.add(f"Evaluation {step.name}: ", str(step.config.get("backend") or step.toml.get("backend") or "?"),
          " backend, model ", step.model)
    adapter = step.toml.get("adapter") or step.config.get("adapter")
    if adapter:
        p.add(" with adapter ", str(adapter))
    if step.quantization != "none":
        p.add(" (", step.quantization, ")")
    p.add(", method ", step.method, ", prompt ", str(step.prompt))
    if step.is_kshot:
        seeds = step.config.get("fewshot_seeds") or []
        p.add(", k = ", p.value(cfg, ("shots",), "int"), " examples drawn from the training split with few-shot "
              "seeds ", *_join([[cfg.num(("fewshot_seeds", i), "int")] for i in range(len(seeds))]))
    if step.is_sentiment:
        p.add(", ", p.value(cfg, ("iterations",), "int"), " iterations per item, format ",
              str(step.config.get("format", "schema")))
        if isinstance(step.config.get("items_named"), int):
            p.add(", the item message naming the stock for ", cfg.num(("items_named",), "int"), " items")
    p.add(", seed ", p.value(cfg, ("seed",), "int"))
    if step.config.get("n_items") is not None:
        p.add(", on ", cfg.num(("n_items",), "int"), " test items")
    if step.run.kind == "bare" and step.config.get("data"):
        p.add(" from ", str(step.config["data"]), f" (sha256 {str(step.config.get('data_sha256', ''))[:12]}…)")
    return p.add(".").text()


def software_sentence(run: Run) -> Text | None:
    env = run.environment
    if not env:
        return None
    pkgs = env.get("packages") or {}
    shown = [f"{k} {pkgs[k]}" for k in PACKAGES_SHOWN if pkgs.get(k)]
    git = env.get("git") or {}
    parts: list[Any] = [f"Software ({run.label}): Python {env.get('python', '?')}"]
    if shown:
        parts.append(", " + ", ".join(shown))
    if git.get("short"):
        parts.append(f"; git {git['short']}" + (" with uncommitted changes" if git.get("dirty") else ""))
    cuda = env.get("cuda") or {}
    if cuda.get("devices"):
        parts.append(f"; CUDA {cuda.get('version')} on {', '.join(cuda['devices'])}")
    elif env.get("cpu_count"):
        parts.append(f"; {env.get('platform', 'CPU')}")
    if env.get("created_utc"):
        parts.append(f"; run started {env['created_utc']}")
    return Text([*parts, "."])


def _step_n(step: Step, repeated: bool) -> list[Part | None]:
    m = step.metrics_src
    if not repeated:
        return [step.name, " (n = ", m.num(("n",), "int"), ")"]
    return [step.name, " (n = ", m.num(("n",), "int"), " items, ", m.num(("n_predictions",), "int"),
            " predictions; ", m.num(("inference", "bootstrap_resamples"), "int"), " resamples, seed ",
            m.num(("inference", "bootstrap_seed"), "int"), ")"]


def statistics_paragraph(run: Run) -> Text | None:
    """What n counts and how each step's intervals and tests were made, from metrics.json's ``inference``."""
    steps = [s for s in run.steps if isinstance(s.metrics.get("n"), int)]
    if not steps:
        return None
    kind = {id(s): (s.metrics.get("inference") or {}).get("interval") for s in steps}
    single = [s for s in steps if kind[id(s)] == "wilson"]
    multi = [s for s in steps if kind[id(s)] == "cluster_bootstrap_percentile"]
    other = [s for s in steps if kind[id(s)] not in ("wilson", "cluster_bootstrap_percentile")]
    p = _Para().add(f"Statistics ({run.label}). ")
    if single:
        p.add("One prediction per test item, so n counts test items (and predictions alike), 95% intervals are "
              "Wilson score intervals and the binomial tests against chance and the majority class are exact: ",
              *_join([_step_n(s, False) for s in single]), ". ")
    if multi:
        tie = (multi[0].metrics.get("inference") or {}).get("tie_rule")
        p.add("Several predictions per test item (few-shot seeds or sentiment iterations), so n counts distinct "
              "test items and n predictions every prediction: the accuracy is the mean over all predictions; its "
              "95% interval, and those of the other rates, is a percentile bootstrap over items that resamples "
              "each item together with all of its predictions; the binomial tests (and McNemar in the compare "
              "files) use one outcome per item", f" ({tie})" if tie else " (a majority vote)", ": ",
              *_join([_step_n(s, True) for s in multi]), ". ")
    if other:
        p.add("No inference record in metrics.json (a run from before issue 13: n and intervals as that version "
              "made them, Wilson over all predictions): ", ", ".join(s.name for s in other), ".")
    return p.text()


def report_statistics(table_ids: set[str], family: Family) -> list[Text]:
    """The report-wide statistics: per-group intervals, calibration, the market link and the Holm family (only for
    what the report shows)."""
    from kofinsent.evaluation.analysis import BINNING, MAX_UNDEFINED, MIN_DAYS
    from kofinsent.report.analysis import MARKET_BOOT

    out: list[Text] = []
    if table_ids & {"accuracy_by_stock", "accuracy_by_year"}:
        out.append(Text([
            ("Accuracy per stock and per year: each run's predictions joined by id with its test records; n items "
            "counts the group's distinct test items and n predictions its predictions (shown when a run has several "
            "per item). The interval follows the run: Wilson over the group's predictions when each item has one, "
            "else the percentile bootstrap over the group's items (each with all of its predictions) with the run's "
            "resamples and seed.")]))
    if "calibration" in table_ids:
        out.append(Text([
            ("Calibration (log-likelihood runs): the confidence of a prediction is the predicted answer's probability "
            "under the two-way softmax of the log-likelihoods of [상승] and [하락]; binning: "), BINNING,
            ("; the expected calibration error (ECE) weights the absolute gap between each bin's accuracy and mean "
            "confidence by the bin's share of the n predictions (every few-shot seed's prediction counts); no "
            "interval is given for it.")]))
    if "market_link" in table_ids:
        out.append(Text([
            ("The market link: per stock and trading day (the move_date session that labels the day's test titles), "
            "the share of predictions [상승] (invalid predictions in the denominator) and, for sentiment runs, the "
            "mean valid sentiment; against that session's return and the stock's next traded session's return "
            "(dataset/returns.jsonl). n = stock-days with both values (no correlation below "), str(MIN_DAYS),
            " days). Pearson r and Spearman rho with 95% percentile bootstrap intervals over stock-days (",
            str(MARKET_BOOT.resamples), " resamples with replacement, seed ", str(MARKET_BOOT.seed),
            "; a resample without spread has no correlation and is left out and counted, and more than ",
            f"{100 * MAX_UNDEFINED:g}%", (" such resamples leave no interval), per stock and pooled over all "
            "stock-days.")]))
    if family.size:
        out.append(Text([
            ("Paired tests: Holm's step-down adjustment (statsmodels multipletests, method holm) over the family of "
            "all "), family.size_num(), (" paired tests this report shows: the McNemar p of every compare file and, "
            "for sentiment pairs, the per-item paired tests (Wilcoxon and paired t on the item means, Wilcoxon on "
            "the item variances); raw and adjusted p side by side. McNemar's mid-p is shown unadjusted; the pooled "
            "Brown–Forsythe and Welch tests are not paired and keep compare.json's Holm over those two. McNemar "
            "pairs test items, with one majority-vote outcome per item when a run has several predictions; the "
            "accuracy difference has a paired percentile bootstrap interval over items (each with all of its "
            "predictions in both runs).")]))
    return out


def methods(run: Run) -> list[Text]:
    """The paragraphs for one run, in reading order: data, models, training, evaluation, software."""
    out: list[Text | None] = []
    exp = run.config.get("experiment", {})
    if exp:
        seed = run.src("config.toml", run.config).num(("experiment", "seed"), "int")
        out.append(Text([f"Experiment {run.label}", *((" (seed ", seed, ")") if seed else ()),
                         f": {str(exp['description']).rstrip('.')}" if exp.get("description") else "", "."]))
    out.append(_data_paragraph(run))
    out.append(teacher_sentence(run))
    out.append(_models_paragraph(run))
    out += [_train_paragraph(run, t) for t in run.trains]
    evals = [eval_sentence(s) for s in run.steps if s.kind == "eval"]
    if evals:
        out.append(Text([q for e in evals for q in (*e.parts, " ")][:-1]))
    base = [eval_sentence(s) for s in run.steps if s.kind == "baseline"]
    if base:
        out.append(Text([q for e in base for q in (*e.parts, " ")][:-1]))
    out.append(statistics_paragraph(run))
    out.append(software_sentence(run))
    return [t for t in out if t is not None and t.parts]

