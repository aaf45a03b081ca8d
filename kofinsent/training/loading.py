"""Loading what the hf engine trains: tokenizer, base model (float32 / bf16, or 8-bit / 4-bit through bitsandbytes,
set up as the evaluator sets it up: :mod:`kofinsent.backends.hf_loading`), the LoRA targets and the adapter; the
autocast precision of the run; folding a trained adapter back into its base (``--merge``, ``kofinsent export``)."""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from kofinsent.backends.hf_loading import bnb_config, looks_local, require_bitsandbytes
from kofinsent.training.attention import load_with_attention, used_attention
from kofinsent.training.distributed import fsdp_active, local_rank
from kofinsent.training.errors import TrainError
from kofinsent.training.options import TrainConfig

# LoRA targets per model_type; other architectures fall back to peft's own defaults (or --target-modules).
DEFAULT_TARGETS: dict[str, list[str]] = {
    "gpt_neox": ["query_key_value"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
}


# -- LoRA targets ------------------------------------------------------------------------------------------------------
def _linear_paths(model: Any) -> list[str]:
    import torch

    return [name for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) or type(mod).__name__ in ("Linear8bitLt", "Linear4bit")]


def linear_module_names(model: Any) -> list[str]:
    """Leaf names of the model's Linear layers (bitsandbytes' 8-bit / 4-bit Linear included): what LoRA can target."""
    return sorted({p.rsplit(".", 1)[-1] for p in _linear_paths(model)})


def resolve_targets(model: Any, requested: Sequence[str] | None) -> list[str]:
    """The LoRA target modules: ``requested`` or the model type's default; each must match a Linear module (peft's
    suffix rule), else a :class:`TrainError` listing the model's Linear module names."""
    linear = linear_module_names(model)
    paths = _linear_paths(model)
    model_type = getattr(model.config, "model_type", None)
    targets = list(requested) if requested else DEFAULT_TARGETS.get(model_type)
    if targets is None:
        raise TrainError(f"no default LoRA target modules for model_type {model_type!r}; pass --target-modules "
                         f"(the model's Linear modules: {', '.join(linear)})")
    missing = [t for t in targets if not any(p == t or p.endswith("." + t) for p in paths)]
    if missing:
        raise TrainError(f"target modules {', '.join(missing)} match no Linear module of this {model_type} model; "
                         f"its Linear modules are: {', '.join(linear)}")
    return targets


# -- precision ---------------------------------------------------------------------------------------------------------
def precision_flags(cfg: TrainConfig, cuda: bool) -> dict[str, bool]:
    """The Trainer's ``fp16`` / ``bf16`` flags for ``cfg.precision`` (auto: bf16 where the GPU has it, else fp16;
    float32 on a CPU, where half precision is refused)."""
    if cfg.precision in ("fp16", "bf16") and not cuda:
        raise TrainError(f"--precision {cfg.precision} needs CUDA; on CPU training runs in float32")
    if cfg.precision == "auto":
        if not cuda:
            return {"fp16": False, "bf16": False}
        import torch

        bf16 = torch.cuda.is_bf16_supported()
        return {"fp16": not bf16, "bf16": bf16}
    return {"fp16": cfg.precision == "fp16", "bf16": cfg.precision == "bf16"}


def _quantized_kwargs(quant: str, cuda: bool) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for bitsandbytes base weights."""
    import torch

    require_bitsandbytes(quant, TrainError)
    # bitsandbytes on CPU is only practical with float32 compute (see the environment notes).
    compute = torch.float32 if not cuda else (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return {"quantization_config": bnb_config(quant, compute), "dtype": torch.float32 if not cuda else compute,
            "device_map": {"": local_rank() if cuda else "cpu"}}


# -- model -------------------------------------------------------------------------------------------------------------
def load_tokenizer(model_name: str) -> Any:
    """The base model's tokenizer, its EOS doubling as the pad token when it has none."""
    import transformers

    if (looks_local(model_name) or Path(model_name).exists()) and not Path(model_name).expanduser().is_dir():
        raise TrainError(f"model path {model_name} does not exist or is not a directory")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_name)
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot load the tokenizer of {model_name}: {e}") from e
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(cfg: TrainConfig) -> tuple[Any, Any, dict[str, Any]]:
    """(peft model, tokenizer, resolved facts) for ``cfg``."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model_name = str(cfg.model)
    tokenizer = load_tokenizer(model_name)
    cuda = torch.cuda.is_available()
    precision = precision_flags(cfg, cuda)
    quant = "8bit" if cfg.load_in_8bit else "4bit" if cfg.load_in_4bit else None
    if quant:
        kwargs = _quantized_kwargs(quant, cuda)
    else:
        # bf16: frozen weights stored in bf16 (what autocast casts them to at every step; LoRA stays float32), else
        # float32 (fp16 autocast; FSDP wants one dtype per unit)
        kwargs = {"dtype": torch.bfloat16 if precision["bf16"] and not fsdp_active() else torch.float32}
    try:
        model = load_with_attention(partial(transformers.AutoModelForCausalLM.from_pretrained, model_name),
                                    cfg.attn_implementation, cuda, precision["bf16"] or precision["fp16"], **kwargs)
    except (OSError, ValueError, ImportError) as e:
        raise TrainError(f"cannot load the model {model_name}: {e}") from e
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False  # never read in training; with a cache, packed examples would attend to each other

    targets = resolve_targets(model, cfg.target_modules)
    if quant:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    trainable, total = model.get_nb_trainable_parameters()
    facts = {"quantization": quant, "target_modules": targets, "model_type": model.config.model_type,
             "attn_implementation_used": used_attention(model),
             "base_dtype": str(kwargs["dtype"]).removeprefix("torch."),
             "trainable_params": trainable, "total_params": total, "cuda": cuda,
             "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    return model, tokenizer, facts


def merge_adapter(base: str, adapter: Path, out: Path) -> Path:
    """The base model in float32 (never quantized: merging into 8-bit weights loses the update) + the adapter folded
    in, saved with the tokenizer to ``out``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


__all__ = ["DEFAULT_TARGETS", "linear_module_names", "load_model", "load_tokenizer", "merge_adapter",
           "precision_flags", "resolve_targets"]
