"""Export a fine-tuned Llama for llama.cpp and Ollama (``kofinsent export``).

Lowest first: :mod:`~kofinsent.export.errors` (:class:`ExportError`), :mod:`~kofinsent.export.gguf_writer` (a Hugging
Face Llama as an f32 / f16 GGUF), :mod:`~kofinsent.export.ollama` (the Modelfile, registration with a server),
:mod:`~kofinsent.export.resolve` (which model: merged, adapter + base, or a directory) and
:mod:`~kofinsent.export.quantize` (:func:`export_gguf`: the GGUF files per quant type, the Modelfile, the manifest).
Nothing is imported here, so that catching :class:`ExportError` does not load the rest.
"""
