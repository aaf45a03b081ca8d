"""Which backend takes which option: the one place that turns a run's options (an evaluation's, the teacher's) into
a backend's constructor arguments, and refuses an option the chosen backend does not have, naming the flag.

``scoring``: whether the run scores log-likelihoods. llama.cpp then keeps every position's logits (``logits_all``);
a generation-only run does not, which saves copying n_vocab logits per prompt token off the GPU and a host buffer of
n_ctx x n_vocab floats (4 GiB for LLaMA-3 at n_ctx 8192).
"""
from __future__ import annotations

from typing import Any


class BackendOptionError(ValueError):
    """An option the chosen backend does not take, or a value it cannot use (the message names the flag)."""


def int_problem(flag: str, value: object, minimum: int, alternative: str = "") -> str | None:
    """The message for an option that must be an integer >= ``minimum`` (a TOML ``true`` is not 1), or
    None when ``value`` is one; ``alternative``: another accepted value, named in the message (" or auto")."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return None
    return f"{flag} must be an integer >= {minimum}{alternative}, got {value!r}"


def temperature_problem(value: float | None) -> str | None:
    """The sampling temperature every backend takes: 0 (greedy) to 2, as OpenAI's API; None: the default."""
    if value is None or 0.0 <= value <= 2.0:
        return None
    return f"--temperature must be within [0, 2], got {value}"


def check_llamacpp_options(n_gpu_layers: int | None, n_ctx: int | None) -> None:
    """``--n-gpu-layers``: -1 (all), 0 (CPU) or a layer count; ``--n-ctx``: tokens, >= 1; None: the backend's
    default."""
    if problem := ((n_gpu_layers is not None and int_problem("--n-gpu-layers", n_gpu_layers, -1, " (-1: all layers)"))
                   or (n_ctx is not None and int_problem("--n-ctx", n_ctx, 1))):
        raise BackendOptionError(problem)


def backend_kwargs(backend: str, model: str, *, host: str | None = None, seed: int = 0, format: str = "schema",
                   concurrency: int = 1, n_gpu_layers: int | None = None, n_ctx: int | None = None,
                   adapter: str | None = None, load_in_8bit: bool = False, load_in_4bit: bool = False,
                   dtype: str = "auto", batch_size: int | str | None = None, prefix_cache: bool = True,
                   scoring: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``get_backend(backend, **kw)``; :class:`BackendOptionError` for an option set away from
    its default that ``backend`` does not take."""
    kw: dict[str, Any] = {"model": model}
    if backend == "hf":
        kw.update(adapter=adapter, load_in_8bit=load_in_8bit, load_in_4bit=load_in_4bit, dtype=dtype,
                  batch_size=batch_size, prefix_cache=prefix_cache)
    elif adapter or load_in_8bit or load_in_4bit:
        raise BackendOptionError(f"--adapter / --load-in-8bit / --load-in-4bit apply to --backend hf, not {backend}")
    if concurrency != 1 and backend != "openai":
        raise BackendOptionError(f"--concurrency applies to --backend openai, not {backend}")
    check_llamacpp_options(n_gpu_layers, n_ctx)
    if backend == "llamacpp":
        kw.update(seed=seed, prefix_cache=prefix_cache, logits_all=scoring)
        kw.update({k: v for k, v in (("n_gpu_layers", n_gpu_layers), ("n_ctx", n_ctx)) if v is not None})
    else:
        given = [flag for flag, v in (("--n-gpu-layers", n_gpu_layers), ("--n-ctx", n_ctx)) if v is not None]
        if given:
            where = {"ollama": " (the Ollama server sets its own GPU layers; its context is seed 000's num_ctx "
                               "8192)",
                     "openai": " (the server decides its context and its GPU use)"}.get(backend, "")
            raise BackendOptionError(f"{' / '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to --backend "
                                     f"llamacpp, not {backend}{where}")
    if backend == "openai":
        kw.update(seed=seed, format=format, concurrency=concurrency)
    if backend == "ollama":
        kw.update(seed=seed, format=format)
    if backend in ("openai", "ollama") and host:
        kw["host"] = host
    return kw


__all__ = ["BackendOptionError", "backend_kwargs", "check_llamacpp_options"]
