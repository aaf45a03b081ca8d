"""Training: the HF / Unsloth engines move here with the house plan (issue 16); new modules start here."""
