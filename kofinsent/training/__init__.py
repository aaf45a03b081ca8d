"""Fine-tuning (``kofinsent train``), lowest module first: ``errors`` (TrainError), ``distributed`` (rank, FSDP),
``attention`` / ``batching`` / ``collators``, ``options`` (TrainConfig), ``records`` (data), ``loading`` (model,
LoRA targets, precision, bitsandbytes), ``run_dir``, ``validation``; the engines ``hf_trainer`` and ``unsloth``;
``engines`` (``--engine``) and ``seeds`` on top. Imports only point down this list."""
