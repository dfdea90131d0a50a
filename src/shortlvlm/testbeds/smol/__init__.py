"""smol-llava: a LLaVA on a real pretrained language model (SmolLM2-135M-Instruct, 30 Llama layers).

Only the parts we trained ship with the package (`parts/`); the pretrained language model is
fetched and the full checkpoint assembled into the user's cache on first use (`assemble.py`).
"""

SMOL_NAME = "smol-llava"
