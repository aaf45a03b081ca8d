"""The Ollama side of an export: the Modelfile, and registering a GGUF with an Ollama server.

- :func:`modelfile_text` is the Ollama Modelfile: the GGUF, llama-3's chat template with its stop tokens, the sentiment
  system prompt and seed 000's options (temperature 0.2, num_ctx 8192, num_predict 1024).
- :func:`register_ollama` uploads the GGUF as a blob and creates the model through the official ``ollama`` client
  (``create_blob`` + ``create(files=...)``), with the system prompt, template and parameters of a Modelfile.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kofinsent.export.errors import ExportError

# Ollama's llama-3 template (as in its llama3 library model) and the stop tokens that end a turn.
LLAMA3_TEMPLATE = """\
{{ if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>

{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>

{{ .Response }}<|eot_id|>"""
LLAMA3_STOP = ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>")
# seed 000's Ollama options
DEFAULT_PARAMETERS: dict[str, Any] = {"temperature": 0.2, "num_ctx": 8192, "num_predict": 1024}


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


__all__ = ["DEFAULT_PARAMETERS", "LLAMA3_STOP", "LLAMA3_TEMPLATE", "modelfile_text", "parse_modelfile",
           "register_ollama"]
