"""GGUF export of fine-tuned Llama models, an Ollama Modelfile for them, and registration with an Ollama server.

CPU only, no Unsloth, no llama.cpp checkout:

- :func:`resolve_model` finds the Hugging Face model to convert: ``RUN_DIR/merged`` (a run trained with ``--merge``),
  else ``RUN_DIR/adapter`` folded into the base model named in ``RUN_DIR/config.json`` (peft ``merge_and_unload``,
  into a temporary directory), or a model directory given directly.
- :func:`export_gguf` writes ``f32`` / ``f16`` with :func:`kofinsent.export.gguf_writer.write_llama_gguf` and the quantized
  types (``q8_0``, ``q4_k_m``, ``q5_k_m``) by quantizing an f32 / f16 GGUF with llama-cpp-python's bundled
  ``llama_model_quantize``. K-quants need rows whose length is a multiple of 256; llama.cpp falls back to q5_0 / q5_1 /
  q8_0 for tensors that are not, and the manifest says so per file (``fallback``, ``tensor_types``).
- :func:`modelfile_text` is the Ollama Modelfile: the GGUF, llama-3's chat template with its stop tokens, the sentiment
  system prompt and seed 000's options (temperature 0.2, num_ctx 8192, num_predict 1024).
- :func:`register_ollama` uploads the GGUF as a blob and creates the model through the official ``ollama`` client
  (``create_blob`` + ``create(files=...)``), with the system prompt, template and parameters of a Modelfile.
"""
from __future__ import annotations

import ctypes
import json
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kofinsent.runs import sha256_file

FLOAT_TYPES = ("f32", "f16")
# quant name -> llama.cpp's llama_ftype constant (llama_cpp.LLAMA_FTYPE_*)
QUANT_FTYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
                "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M"}
QUANTS = (*FLOAT_TYPES, *QUANT_FTYPES)
_LEGACY = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
# the main GGML tensor type each quant is meant to use (K-quants fall back to other types on rows not a multiple of 256)
_MAIN_TYPE = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "q4_k_m": "Q4_K", "q5_k_m": "Q5_K"}

# Ollama's llama-3 template (as in its llama3 library model) and the stop tokens that end a turn.
LLAMA3_TEMPLATE = """\
{{ if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>

{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>

{{ .Response }}<|eot_id|>"""
LLAMA3_STOP = ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>")
# seed 000's Ollama options
DEFAULT_PARAMETERS: dict[str, Any] = {"temperature": 0.2, "num_ctx": 8192, "num_predict": 1024}


class ExportError(Exception):
    """A model that cannot be exported, an unknown quant type, a failed quantization or an unreachable server."""


# -- quant names -------------------------------------------------------------------------------------------------------
def parse_quants(spec: str | Sequence[str]) -> list[str]:
    """``"q4_k_m,Q8_0,f16"`` -> ``["q4_k_m", "q8_0", "f16"]`` (order kept, duplicates dropped); unknown names are an
    :class:`ExportError` listing the supported ones."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in (s.strip().lower() for s in items):
        if not item:
            continue
        if item not in QUANTS:
            raise ExportError(f"unknown quant type {item!r}; supported: {', '.join(QUANTS)}")
        if item not in out:
            out.append(item)
    if not out:
        raise ExportError(f"no quant type given; supported: {', '.join(QUANTS)}")
    return out


# -- which model -------------------------------------------------------------------------------------------------------
def _check_llama(hf_dir: Path) -> None:
    from kofinsent.export.gguf_writer import _hparams, _read_json

    try:
        _hparams(_read_json(hf_dir / "config.json"))
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
        from kofinsent.training.hf_trainer import merge_adapter

        out = merge_adapter(base, adapter, tmp / "merged")
        _check_llama(out)
        yield out
    finally:
        from kofinsent.paths import remove_tree

        remove_tree(tmp, tempfile.gettempdir(), ignore_errors=True)  # ours: made by mkdtemp above


# -- quantize and inspect ----------------------------------------------------------------------------------------------
def quantize_gguf(src: str | Path, dst: str | Path, quant: str, nthread: int = 0, verbose: bool = False) -> Path:
    """Quantize the f32 / f16 GGUF ``src`` to ``dst`` with llama.cpp's ``llama_model_quantize``."""
    import llama_cpp

    if quant not in QUANT_FTYPES:
        raise ExportError(f"{quant!r} is not a quantized type; quantized types: {', '.join(QUANT_FTYPES)}")
    ftype = getattr(llama_cpp, QUANT_FTYPES[quant], None)
    if ftype is None:
        raise ExportError(f"this llama-cpp-python ({llama_cpp.__version__}) has no {QUANT_FTYPES[quant]}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = nthread
    from llama_cpp._utils import suppress_stdout_stderr

    # llama.cpp's quantizer prints its log (one line a tensor, fallback warnings) straight to the process's stderr;
    # the fallbacks are read back from the written file instead (gguf_info).
    with suppress_stdout_stderr(disable=verbose):
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not Path(dst).is_file():
        from kofinsent.paths import remove_file

        remove_file(dst, Path(dst).parent, missing_ok=True)  # the partial file, where it was being written
        raise ExportError(f"{quant}: llama.cpp quantization of {src} failed (return code {rc})")
    return Path(dst)


def gguf_info(path: str | Path) -> dict[str, Any]:
    """``general.file_type`` (name and number) and the count of tensors per GGML type of a GGUF file."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = reader.fields.get("general.file_type")
    ftype = int(field.parts[field.data[0]][0]) if field is not None else None
    try:
        ftype_name = gguf.LlamaFileType(ftype).name if ftype is not None else None
    except ValueError:
        ftype_name = None
    types: dict[str, int] = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return {"file_type": ftype, "file_type_name": ftype_name, "tensor_types": dict(sorted(types.items()))}


# -- Modelfile ---------------------------------------------------------------------------------------------------------
def _quote(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def modelfile_text(gguf_file: str, system: str | None = None, template: str = LLAMA3_TEMPLATE,
                   stop: Sequence[str] = LLAMA3_STOP, parameters: dict[str, Any] | None = None) -> str:
    """An Ollama Modelfile for ``gguf_file`` (a path relative to the Modelfile, e.g. ``model-q4_k_m.gguf``)."""
    if system is None:
        from kofinsent.prompts.sentiment import SYSTEM_PROMPT as system
    for text, what in ((system, "system prompt"), (template, "template")):
        if '"""' in text:
            raise ExportError(f'the {what} contains """, which a Modelfile cannot quote')
    lines = [f"FROM ./{gguf_file}", "", f'TEMPLATE """{template}"""', "", f'SYSTEM """{system}"""', ""]
    lines += [f"PARAMETER stop {_quote(s)}" for s in stop]
    lines += [f"PARAMETER {k} {_quote(v)}" for k, v in (parameters if parameters is not None
                                                         else DEFAULT_PARAMETERS).items()]
    return "\n".join(lines) + "\n"


def _number(value: str) -> Any:
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def parse_modelfile(text: str) -> dict[str, Any]:
    """The parts of a Modelfile ``ollama.Client.create`` takes: ``from`` (the FROM argument), ``template``,
    ``system`` and ``parameters`` (``stop`` a list, numbers as numbers). Handles ``\"\"\"`` blocks and quoted values."""
    out: dict[str, Any] = {"from": None, "template": None, "system": None, "parameters": {}}
    i, n = 0, len(text)
    while i < n:
        end = text.find("\n", i)
        end = n if end < 0 else end
        line = text[i:end].strip()
        if not line or line.startswith("#"):
            i = end + 1
            continue
        cmd, _, rest = line.partition(" ")
        cmd = cmd.upper()
        rest = rest.strip()
        if cmd == "PARAMETER":
            key, _, raw = rest.partition(" ")
            raw = raw.strip()
            value: Any = json.loads(raw) if raw.startswith('"') else _number(raw)
            params = out["parameters"]
            if key == "stop":
                params.setdefault("stop", []).append(value)
            else:
                params[key] = value
            i = end + 1
            continue
        start = text.find(rest, i) if rest else end  # position of the argument in the text
        if rest.startswith('"""'):
            close = text.find('"""', start + 3)
            if close < 0:
                raise ExportError(f'Modelfile: {cmd} opens """ and never closes it')
            value = text[start + 3:close]
            i = text.find("\n", close)
            i = n if i < 0 else i + 1
        else:
            value = json.loads(rest) if rest.startswith('"') else rest
            i = end + 1
        if cmd in ("FROM", "TEMPLATE", "SYSTEM"):
            out[cmd.lower()] = value
    return out


# -- export gguf -------------------------------------------------------------------------------------------------------
def export_gguf(out_dir: str | Path, quants: str | Sequence[str], run: str | Path | None = None,
                model: str | Path | None = None, name: str | None = None, system: str | None = None,
                nthread: int = 0, verbose: bool = False) -> dict[str, Any]:
    """Write ``NAME-<quant>.gguf`` for each quant, a Modelfile (FROM the first quant) and ``manifest.json`` to
    ``out_dir``; returns the manifest. A failed quant is recorded under ``failed`` and the others are still written;
    if none is written, :class:`ExportError`."""
    from kofinsent.export.gguf_writer import write_llama_gguf

    quants = parse_quants(quants)
    out = Path(out_dir)
    source = Path(run or model or "")  # for the default name
    name = name or (source.resolve().name if str(source) else "model")
    files: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    with resolve_model(run, model) as hf_dir:
        out.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        with tempfile.TemporaryDirectory(prefix="kofinsent-gguf-", dir=out) as tmp:
            for q in [q for q in quants if q in FLOAT_TYPES]:
                written[q] = write_llama_gguf(hf_dir, out / f"{name}-{q}.gguf", dtype=q, name=name)
            need_quant = [q for q in quants if q in QUANT_FTYPES]
            if need_quant:
                # quantize from the best float file there is; f16 (llama.cpp's usual source) when none was asked for
                src = written.get("f32") or written.get("f16") or write_llama_gguf(
                    hf_dir, Path(tmp) / f"{name}-f16.gguf", dtype="f16", name=name)
                for q in need_quant:
                    try:
                        written[q] = quantize_gguf(src, out / f"{name}-{q}.gguf", q, nthread=nthread, verbose=verbose)
                    except ExportError as e:
                        failed[q] = str(e)
    for q in quants:
        if q not in written:
            continue
        path = written[q]
        info = gguf_info(path)
        types = info["tensor_types"]
        # a K-quant whose rows are not multiples of 256 gets legacy types (q5_0 / q5_1 / q8_0) instead
        fallback = _MAIN_TYPE[q] not in types or (q.endswith("_k_m") and any(t in _LEGACY for t in types))
        files.append({"file": path.name, "quant": q, "size": path.stat().st_size, "sha256": sha256_file(path),
                      **info, "fallback": fallback})
    if not files:
        raise ExportError("no GGUF written: " + "; ".join(failed.values()))
    modelfile = out / "Modelfile"
    modelfile.write_text(modelfile_text(files[0]["file"], system=system), encoding="utf-8")
    merged_now = run is not None and not (Path(run) / "merged" / "config.json").is_file()
    manifest = {"name": name, "source": str(run or model),
                "hf_model": "adapter merged into its base (temporary)" if merged_now else str(hf_dir),
                "modelfile": modelfile.name, "files": files, "failed": failed}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


# -- export ollama -----------------------------------------------------------------------------------------------------
def register_ollama(gguf_path: str | Path, name: str, host: str | None = None, modelfile: str | Path | None = None,
                    timeout: float = 600.0) -> dict[str, Any]:
    """Upload ``gguf_path`` to the Ollama server at ``host`` and create ``name`` from it, with the template, system
    prompt and parameters of ``modelfile`` (default: the ``Modelfile`` next to the GGUF, else the ones
    :func:`modelfile_text` writes). Returns what was sent (digest, files, template, system, parameters, status)."""
    import httpx
    import ollama

    path = Path(gguf_path)
    if not path.is_file():
        raise ExportError(f"GGUF file {str(path)!r} not found")
    mf_path = Path(modelfile) if modelfile else path.parent / "Modelfile"
    if modelfile and not mf_path.is_file():
        raise ExportError(f"Modelfile {str(mf_path)!r} not found")
    spec = parse_modelfile(mf_path.read_text(encoding="utf-8")) if mf_path.is_file() else parse_modelfile(
        modelfile_text(path.name))
    client = ollama.Client(host=host, timeout=timeout)
    where = host or "the default Ollama host (OLLAMA_HOST or http://127.0.0.1:11434)"
    try:
        digest = client.create_blob(path)
        files = {path.name: digest}
        resp = client.create(model=name, files=files, template=spec["template"], system=spec["system"],
                             parameters=spec["parameters"] or None, stream=False)
    except (ConnectionError, httpx.HTTPError) as e:
        raise ExportError(f"cannot reach the Ollama server at {where}: {e} (is `ollama serve` running?)") from e
    except ollama.ResponseError as e:
        raise ExportError(f"Ollama server at {where} refused to create {name!r}: {e.error} "
                          f"(HTTP {e.status_code})") from e
    return {"name": name, "host": host, "digest": digest, "files": files, "template": spec["template"],
            "system": spec["system"], "parameters": spec["parameters"], "status": getattr(resp, "status", None)}


__all__ = ["DEFAULT_PARAMETERS", "ExportError", "FLOAT_TYPES", "LLAMA3_STOP", "LLAMA3_TEMPLATE", "QUANTS",
           "QUANT_FTYPES", "export_gguf", "gguf_info", "modelfile_text", "parse_modelfile", "parse_quants",
           "quantize_gguf", "register_ollama", "resolve_model"]
