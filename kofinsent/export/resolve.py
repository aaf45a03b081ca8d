"""Which Hugging Face model an export converts: :func:`resolve_model`.

``RUN_DIR/merged`` (a run trained with ``--merge``), else ``RUN_DIR/adapter`` folded into the base model named in
``RUN_DIR/config.json`` (peft ``merge_and_unload``, into a temporary directory), or a model directory given directly.
Each is checked to be a Llama the GGUF writer supports before anything slow happens.
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kofinsent.export.errors import ExportError
from kofinsent.export.gguf_writer import read_hparams


def _check_llama(hf_dir: Path) -> None:
    try:
        read_hparams(hf_dir)
    except FileNotFoundError as e:
        raise ExportError(str(e)) from e
    except (ValueError, KeyError) as e:
        raise ExportError(f"{hf_dir}: cannot export to GGUF: {e}") from e


def _run_base(run: Path, adapter: Path) -> str:
    cfg_path = run / "config.json"
    if cfg_path.is_file():
        base = json.loads(cfg_path.read_text(encoding="utf-8")).get("model")
        if base:
            return str(base)
    ad_cfg = adapter / "adapter_config.json"
    if ad_cfg.is_file():
        base = json.loads(ad_cfg.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if base:
            return str(base)
    raise ExportError(f"{run}: no base model in config.json ('model') or adapter/adapter_config.json")


@contextmanager
def resolve_model(run: str | Path | None = None, model: str | Path | None = None) -> Iterator[Path]:
    """The Hugging Face directory to convert, for ``with``: ``model``, ``RUN_DIR/merged``, or ``RUN_DIR/adapter``
    merged into its base model in a temporary directory (removed on exit)."""
    if (run is None) == (model is None):
        raise ExportError("give exactly one of --run RUN_DIR or --model HF_DIR")
    if model is not None:
        path = Path(model)
        if not path.is_dir():
            raise ExportError(f"--model {str(path)!r} is not a directory (a local Hugging Face model is needed)")
        _check_llama(path)
        yield path
        return
    run = Path(run)  # type: ignore[arg-type]
    if not run.is_dir():
        raise ExportError(f"--run {str(run)!r} is not a directory")
    merged = run / "merged"
    if (merged / "config.json").is_file():
        _check_llama(merged)
        yield merged
        return
    adapter = run / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise ExportError(f"{run} holds neither merged/ nor adapter/adapter_config.json: is it a kofinsent train run?")
    base = _run_base(run, adapter)
    if Path(base).is_dir():  # check before the (slow) merge; a hub id is checked after it
        _check_llama(Path(base))
    tmp = Path(tempfile.mkdtemp(prefix="kofinsent-merge-"))
    try:
        from kofinsent.training.loading import merge_adapter

        out = merge_adapter(base, adapter, tmp / "merged")
        _check_llama(out)
        yield out
    finally:
        from kofinsent.paths import remove_tree

        remove_tree(tmp, tempfile.gettempdir(), ignore_errors=True)  # ours: made by mkdtemp above


__all__ = ["resolve_model"]
