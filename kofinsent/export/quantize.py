"""GGUF export of fine-tuned Llama models: :func:`export_gguf` writes one GGUF per quant type, a Modelfile and a
manifest.

CPU only, no Unsloth, no llama.cpp checkout: the model comes from :func:`kofinsent.export.resolve.resolve_model`;
``f32`` / ``f16`` are written by :func:`kofinsent.export.gguf_writer.write_llama_gguf` and the quantized types
(``q8_0``, ``q4_k_m``, ``q5_k_m``) by quantizing an f32 / f16 GGUF with llama-cpp-python's bundled
``llama_model_quantize``. K-quants need rows whose length is a multiple of 256; llama.cpp falls back to q5_0 / q5_1 /
q8_0 for tensors that are not, and the manifest says so per file (``fallback``, ``tensor_types``).
"""
from __future__ import annotations

import ctypes
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kofinsent.export.errors import ExportError
from kofinsent.export.gguf_writer import write_llama_gguf
from kofinsent.export.ollama import modelfile_text
from kofinsent.export.resolve import resolve_model
from kofinsent.runs import sha256_file

FLOAT_TYPES = ("f32", "f16")
# quant name -> llama.cpp's llama_ftype constant (llama_cpp.LLAMA_FTYPE_*)
QUANT_FTYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
                "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M"}
QUANTS = (*FLOAT_TYPES, *QUANT_FTYPES)
_LEGACY = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
# the main GGML tensor type each quant is meant to use (K-quants fall back to other types on rows not a multiple of 256)
_MAIN_TYPE = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "q4_k_m": "Q4_K", "q5_k_m": "Q5_K"}


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


# -- export gguf -------------------------------------------------------------------------------------------------------
def export_gguf(out_dir: str | Path, quants: str | Sequence[str], run: str | Path | None = None,
                model: str | Path | None = None, name: str | None = None, system: str | None = None,
                nthread: int = 0, verbose: bool = False) -> dict[str, Any]:
    """Write ``NAME-<quant>.gguf`` for each quant, a Modelfile (FROM the first quant) and ``manifest.json`` to
    ``out_dir``; returns the manifest. A failed quant is recorded under ``failed`` and the others are still written;
    if none is written, :class:`ExportError`."""
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


__all__ = ["FLOAT_TYPES", "QUANTS", "QUANT_FTYPES", "export_gguf", "gguf_info", "parse_quants", "quantize_gguf"]
