"""``kofinsent export gguf`` and ``kofinsent export ollama``: thin typer wrappers over
:mod:`kofinsent.export.quantize` and :mod:`kofinsent.export.ollama`."""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Export a fine-tuned Llama model as GGUF (+ Ollama Modelfile) and register it with Ollama.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


def _errors() -> AbstractContextManager[None]:
    from kofinsent.cli.errors import one_line_errors
    from kofinsent.export.errors import ExportError  # imported here: `kofinsent --help` stays light

    return one_line_errors(ExportError)


@app.command("gguf")
def gguf_command(
    out: Annotated[Path, typer.Option("--out", help="Output directory (GGUF files, Modelfile, manifest.json).")],
    run: Annotated[Optional[Path], typer.Option(
        "--run", help="A kofinsent train run directory: merged/ if present, else adapter/ merged into its base.")
    ] = None,
    model: Annotated[Optional[Path], typer.Option("--model", help="A local Hugging Face Llama model directory.")
                     ] = None,
    quant: Annotated[str, typer.Option(
        "--quant", help="Comma-separated: f32, f16, q8_0, q4_k_m, q5_k_m. The Modelfile uses the first.")] = "f16",
    name: Annotated[Optional[str], typer.Option(
        "--name", help="File prefix and general.name (default: the run / model directory's name).")] = None,
    threads: Annotated[int, typer.Option("--threads", help="Quantization threads (0: all cores).")] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show llama.cpp's quantization log.")] = False,
) -> None:
    """Write NAME-<quant>.gguf for each quant type, an Ollama Modelfile and manifest.json to --out."""
    from kofinsent.export.quantize import export_gguf
    from kofinsent.paths import check_name, refuse_output_over_input

    with _errors():
        if name is not None:  # NAME-<quant>.gguf is written in --out: a plain file stem, no path
            check_name(name, f"--name {name!r}")
        refuse_output_over_input(out, {"--run": run, "--model": model}, directory=True)
        manifest = export_gguf(out, quant, run=run, model=model, name=name, nthread=threads, verbose=verbose)
    for f in manifest["files"]:
        note = (" (K-quant fell back to legacy types on tensors whose rows are not multiples of 256: "
                f"{f['tensor_types']})") if f["fallback"] else ""
        typer.echo(f"{f['quant']}: {out / f['file']} ({f['size']:,} bytes, {f['file_type_name']}){note}")
    for q, why in manifest["failed"].items():
        typer.echo(f"error: {q}: {why}", err=True)
    typer.echo(f"Modelfile: {out / manifest['modelfile']} (FROM ./{manifest['files'][0]['file']})")
    typer.echo(f"manifest: {out / 'manifest.json'}")
    if manifest["failed"]:
        raise typer.Exit(1)


@app.command("ollama")
def ollama_command(
    gguf: Annotated[Path, typer.Option("--gguf", help="The GGUF file to register.")],
    name: Annotated[str, typer.Option("--name", help="Ollama model name, e.g. kofinsent-llama3:q4_k_m.")],
    host: Annotated[Optional[str], typer.Option(
        "--host", help="Ollama server URL (default: OLLAMA_HOST or http://127.0.0.1:11434).")] = None,
    modelfile: Annotated[Optional[Path], typer.Option(
        "--modelfile", help="Template, system prompt and parameters from this Modelfile (default: the Modelfile "
                            "next to the GGUF, else the built-in llama-3 sentiment one).")] = None,
) -> None:
    """Upload the GGUF to a running Ollama server (create_blob) and create NAME from it (create)."""
    from kofinsent.export.ollama import register_ollama

    with _errors():
        res = register_ollama(gguf, name, host=host, modelfile=modelfile)
    typer.echo(f"created {res['name']} from {gguf.name} ({res['digest']}): {res['status']}")
