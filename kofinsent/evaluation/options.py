"""The options of one evaluation run (``kofinsent eval``, an experiment's ``[eval.NAME]`` table): the one declaration
the CLI, the experiment config and the Python API share, and the checks they all run (:meth:`EvalConfig.validate`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kofinsent.backends.options import int_problem, temperature_problem

METHODS = ("loglikelihood", "generate", "sentiment")
PROMPTS = ("seed2shot", "kshot", "sentiment-json")


class EvalConfigError(ValueError):
    """An evaluation setting that cannot work (named in the message)."""


@dataclass
class EvalConfig:
    backend: str
    model: str
    data: str
    out: str
    method: str = "loglikelihood"
    prompt: str = "seed2shot"
    adapter: str | None = None
    load_in_8bit: bool = False
    load_in_4bit: bool = False
    dtype: str = "auto"
    train: str | None = None
    shots: int = 0
    fewshot_seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    balanced_shots: bool = True
    iterations: int = 1
    batch_size: int | Literal["auto"] | None = None  # None: "auto" for hf on CUDA, else 16 (items_per_call)
    host: str | None = None
    format: str = "schema"          # sentiment: "schema" (format = the reply's JSON schema) or "free"
    concurrency: int = 1            # openai: requests in flight at once (a batch is at least this many prompts)
    seed: int = 0
    prefix_cache: bool = True
    n_gpu_layers: int | None = None  # llamacpp: layers on the GPU, -1 all; None: all when built with GPU offload
    n_ctx: int | None = None         # llamacpp: context window in tokens; None: 8192 (seed 000's num_ctx)
    max_new_tokens: int | None = None  # default: 8 for generate, 1024 for sentiment
    temperature: float | None = None   # default: 0 (greedy) for generate, 0.2 for sentiment (seed 000)
    limit: int | None = None           # first N test items only (smoke runs)
    overwrite: bool = False
    resume: bool = False               # continue the run in ``out`` if it is this config's (see evaluate.py)

    def backend_kwargs(self) -> dict[str, Any]:
        """The backend's constructor arguments (:func:`kofinsent.backends.options.backend_kwargs`); an option the
        backend does not take is an :class:`EvalConfigError` naming the flag."""
        from kofinsent.backends.options import BackendOptionError, backend_kwargs

        try:
            return backend_kwargs(self.backend, self.model, host=self.host, seed=self.seed, format=self.format,
                                  concurrency=self.concurrency, n_gpu_layers=self.n_gpu_layers, n_ctx=self.n_ctx,
                                  adapter=self.adapter, load_in_8bit=self.load_in_8bit, load_in_4bit=self.load_in_4bit,
                                  dtype=self.dtype, batch_size=self.batch_size, prefix_cache=self.prefix_cache,
                                  scoring=self.method == "loglikelihood")
        except BackendOptionError as e:
            raise EvalConfigError(str(e)) from None

    def validate(self, check_files: bool = True) -> None:
        """Raise on an option that cannot work; ``check_files=False`` checks the options alone (config loading)."""
        if self.method not in METHODS:
            raise EvalConfigError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.prompt not in PROMPTS:
            raise EvalConfigError(f"--prompt must be one of {', '.join(PROMPTS)}, got {self.prompt!r}")
        if (self.method == "sentiment") != (self.prompt == "sentiment-json"):
            raise EvalConfigError("--method sentiment goes with --prompt sentiment-json (and only with it), got "
                                  f"--method {self.method} --prompt {self.prompt}")
        if self.prompt == "kshot" and self.train is None:
            raise EvalConfigError("--prompt kshot draws its examples from --train DIR/train.jsonl; none given")
        if self.prompt == "kshot" and not self.fewshot_seeds:
            raise EvalConfigError("--fewshot-seeds is empty")
        # the seed seeds the requests and the bootstrap of the intervals (numpy takes no negative seed)
        if problem := ((self.batch_size not in (None, "auto") and int_problem("--batch-size", self.batch_size, 1,
                                                                                 " or auto"))
                       or int_problem("--seed", self.seed, 0)):
            raise EvalConfigError(problem)
        if self.shots < 0 or self.iterations < 1:
            raise EvalConfigError(f"need --shots >= 0, --iterations >= 1; got {self.shots}, {self.iterations}")
        if problem := int_problem("--concurrency", self.concurrency, 1):
            raise EvalConfigError(problem)
        if self.resume and self.overwrite:
            raise EvalConfigError("--resume continues the run in --out and --overwrite replaces it: pass one")
        if self.format not in ("schema", "free"):
            raise EvalConfigError(f"--format must be schema or free, got {self.format!r}")
        if problem := temperature_problem(self.temperature):
            raise EvalConfigError(problem)
        self.backend_kwargs()  # an option the backend does not take (--n-ctx on ollama, ...)
        if check_files and not Path(self.data).is_file():
            raise EvalConfigError(f"--data {self.data} is not a file")


__all__ = ["METHODS", "PROMPTS", "EvalConfig", "EvalConfigError"]
