"""Names every stage shares, defined once: the two direction labels and the baselines every run is compared with.

The labels are the seeds' exact strings (``[상승]`` up, ``[하락]`` down): the dataset writes them, the prompts end
with them, the evaluator scores them and the report prints them, so a second spelling anywhere would split a class.
"""
from __future__ import annotations

UP, DOWN = "[상승]", "[하락]"
LABELS = (UP, DOWN)

# the baselines `kofinsent baseline` fits and a report or `compare.pairs` may name as baselines/NAME
BASELINES = ("majority", "tfidf_kiwi", "tfidf_char")
