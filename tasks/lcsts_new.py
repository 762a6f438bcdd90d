"""LCSTS_new (千言): summarization of short Chinese news texts.

Files: JSON lines ``{"id", "content", "summary"}``, or the original LCSTS TSV ``summary<TAB>content``
(``-o data.train=train.tsv``; a file to predict for may hold the content alone).
"""
from paddle_unimo.data.seq2seq import Fields

from tasks.generation import GenerationTask

TASK = GenerationTask("lcsts_new", Fields(source="content", target="summary", id="id"),
                      "summarization of short news texts (JSONL, or the LCSTS TSV summary<TAB>content)")
