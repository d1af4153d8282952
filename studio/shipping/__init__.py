"""Getting a model out: the model card, Hub pushes, merges, GGUF, the OpenAI-compatible endpoint."""
