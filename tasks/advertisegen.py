"""AdvertiseGen (千言): advertising copy from product attributes.

Files: JSON lines ``{"content", "summary"}`` where the content is ``类型#上衣*颜色#白色*...``. Besides the
reference scores, the consistency report counts the source's attribute values the copy covers and the values
of the same attribute types (learnt from the training sources) it contradicts.
"""
from paddle_unimo.data.seq2seq import Fields
from paddle_unimo.metrics.consistency import parse_attributes

from tasks.generation import GenerationTask


def value_vocabulary(train_examples):
    from paddle_unimo.metrics import build_value_vocabulary
    return build_value_vocabulary(e.source for e in train_examples)


# a content that is not type#value pieces is a bad line (file:line; --skip-bad skips it): the report reads them
TASK = GenerationTask("advertisegen", Fields(source="content", target="summary", source_format=parse_attributes),
                      "ad copy from product attributes (类型#上衣*颜色#白色...)",
                      consistency_vocabulary=value_vocabulary)
