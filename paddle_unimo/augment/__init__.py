"""CMCL data augmentation (UNIMO paper section 2.1): scene-graph rewriting into hard negatives, user-supplied
paraphrases / back-translations as positives, and TF-IDF / region-label retrieval of similar texts and images.

    scene_graph.parse(caption)        -> SceneGraph (objects with attributes, relations)
    rewrite.make_negatives(graph, n, rng) -> one-slot rewrites; rewrite.read_paraphrases(tsv)
    retrieval.nearest_texts / nearest_images
    records.build_rows / to_example   -> the JSONL rows of tools/build_cmcl_data.py and their CMCLExample
"""
from .retrieval import nearest_images, nearest_texts, region_labels
from .rewrite import Rewrite, make_negatives, read_paraphrases
from .scene_graph import SceneGraph, parse

__all__ = ["parse", "SceneGraph", "make_negatives", "Rewrite", "read_paraphrases", "nearest_texts",
           "nearest_images", "region_labels"]
