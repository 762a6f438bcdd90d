"""DuReaderQG (千言): question generation from a passage and an answer.

Files: JSON lines ``{"context", "answer", "question", "id"}`` (the official ``train.json``/``dev.json``).
Input as PaddleNLP's ``qg_train.sh`` baseline: the answer is the title, the context the source
(``[CLS] answer [SEP] context [SEP]``), the question the target.
"""
from paddle_unimo.data.seq2seq import Fields

from tasks.generation import GenerationTask

TASK = GenerationTask("dureader_qg", Fields(source="context", title="answer", target="question", id="id"),
                      "question generation: the answer is the title, the context the source")
