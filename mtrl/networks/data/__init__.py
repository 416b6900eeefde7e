"""Data files shipped with mtrl.networks (task descriptions and their embeddings)."""
