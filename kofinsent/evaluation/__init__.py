"""The evaluator's statistics on repeated measurements (issue 13). metrics.py, compare.py and baselines.py move here
with the package's house plan; new statistics modules start here."""
