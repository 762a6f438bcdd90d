"""A fine-tuned model as a Python function, for serving it from one's own code (what PaddleNLP's ``Taskflow`` offers
for its models)::

    from tasks.pipeline import Pipeline
    qg = Pipeline("out/dureader_qg/best")      # or its export, out/dureader_qg/inference
    qg({"context": "青石镇位于...", "answer": "3万"})             # -> "青石镇有多少人口"
    qg([{"context": ..., "answer": ...}, ...])                  # -> a list, decoded in batches
    Pipeline("out/lcsts_new/best")("一段新闻...")                 # a text is the source of a task without a title
    Pipeline("out/advertisegen/best", ["decode.decode_strategy=sampling", "decode.top_k=10"],
             num_return_sequences=3)(record)                    # -> 3 candidate copies (seed: null, new each call)
    Pipeline("out/glue_sst2/best")("a gripping film .")          # -> "1"
    Pipeline("out/glue_mrpc/best")(("text a", "text b"))         # a pair task: a pair (or {"text_a", "text_b"})
    Pipeline("out/cnn_dm/best")("(CNN) An article ...")          # the English generation tasks: a source text
    Pipeline("out/coqa/best")({"story": "...", "history": ["question 1", "answer 1", "question 2"]})
    Pipeline("out/vqa/best")({"image": "COCO_val2014_000000391895.jpg", "question": "what is the man riding?"})
    Pipeline("out/coco_caption/best", detector="vg_faster_rcnn.pdparams")("photos/beach.jpg")  # an image file
    Pipeline("out/flickr30k_retrieval/best")("a dog runs on the beach")  # the store's 10 best images, with scores

The folder's ``task.yaml`` (``finetune`` writes it into ``best/``, ``make export`` copies it) names the task and
holds the lengths and decoding settings the model was fine-tuned with; ``overrides`` change them as ``-o`` does
(``["decode.num_beams=1"]``), ``config=`` gives another YAML (a folder fine-tuned before ``task.yaml`` existed).
Inputs go through the task's own encoder, truncation and post-processing, so a call gives what ``make predict``
writes for the same records (retrieval ranks a record's candidates instead: see ``tasks.flickr30k_retrieval``).

A vision-language record names its image: a name in the region store (``regions=``, default the run's
``data.regions``), or, given ``detector=`` (the detector weights the store was extracted with, checked against its
``extraction.json``), an image file, whose regions are extracted as the store's were.

An export folder runs on Paddle Inference, or on ONNX Runtime when it was converted (``FORMAT=onnx``);
``runtime="paddle"``, ``"onnx"`` or ``"onnx_fp32"`` chooses (``tasks.cli.export_runtime``).
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

from paddle_unimo import cpu_defaults

cpu_defaults()  # before anything below imports paddle

from paddle_unimo.fileio import DataError  # noqa: E402
from paddle_unimo.generation import DecodeConfig  # noqa: E402
from paddle_unimo.typed import ConfigError  # noqa: E402

from tasks.cli import load_config, resolve_data_paths, run_config_of, warn_other_prompt  # noqa: E402
from tasks.registry import get_task, task_of_config  # noqa: E402

Record = Union[str, dict, tuple]


class Pipeline:
    """``Pipeline(folder)(records)``: predictions for one record (a mapping of the task's fields, a text, or a
    tuple: see the task's ``pipeline_example``) or a list of them; with ``num_return_sequences`` n > 1
    (generation tasks), each prediction is the list of a record's n best beams (beam search) or n samples."""

    def __init__(self, folder: str, overrides: Sequence[str] = (), config: Optional[str] = None,
                 num_return_sequences: int = 1, regions: Optional[str] = None, detector: Optional[str] = None,
                 runtime: Optional[str] = None):
        from paddle_unimo import load_tokenizer
        from paddle_unimo.checkpoint import find_config
        find_config(folder)  # a folder that is missing or no model folder says so first
        path = config or run_config_of(folder)
        if path is None:
            raise ConfigError(f"{folder}: no task.yaml (the settings finetune saves with a model): give the task's "
                              "YAML (config=; --config, make CONFIG=: e.g. tasks/configs/<task>_tiny.yaml)")
        name = task_of_config(path)
        self.task = get_task(name)
        self.config = load_config(path, [overrides] if isinstance(overrides, str) else overrides,
                                  self.task.config_class)
        self.reads_regions = hasattr(self.config.data, "regions")  # a vision-language task
        if (regions or detector) and not self.reads_regions:
            raise ConfigError(f"{'regions' if regions else 'detector'}=: task {name!r} reads no image regions")
        if self.reads_regions:  # the data section's files, in the run's data folder (finetune saved it as default_dir)
            resolve_data_paths(self.config)
            self.config.data.regions = os.path.abspath(regions or self.config.data.regions)
            if detector is not None and getattr(self.config.data, "tags", None) == "file":
                raise ConfigError(f"detector=: the model reads each image's object tags from data.tag_file "
                                  f"({self.config.data.tag_file}), which has none for new image files; a model "
                                  "fine-tuned with data.tags store (from the detector's classes) or none takes them")
        self.candidates = num_return_sequences
        if num_return_sequences != 1:  # the task's config allows one (a predictions file has a row per example)
            if not isinstance(num_return_sequences, int) or num_return_sequences < 1:
                raise ConfigError(f"num_return_sequences: {num_return_sequences!r} (allowed: an integer >= 1)")
            decode = getattr(self.config, "decode", None)
            if decode is None:
                raise ConfigError(f"num_return_sequences {num_return_sequences}: {name} gives one prediction per "
                                  "record (it does not generate)")
            if decode.decode_strategy == "greedy_search":
                raise ConfigError(f"num_return_sequences {num_return_sequences}: greedy search finds one sequence per "
                                  "record; use decode.decode_strategy=beam_search or sampling")
            decode.num_return_sequences = num_return_sequences
            DecodeConfig.validate(decode, "decode")
        model = self.task.load_model(folder, runtime)
        self.runtime = getattr(model, "runtime", None)  # an export's: which of its programs run
        self.task.check(self.config, model.config, path)
        warn_other_prompt(folder, path, self.config)
        self.runner = self.task.bind(model, load_tokenizer(folder), self.config)
        self.extractor = None
        if self.reads_regions:
            from tasks.vision_language import GivenRegions
            self.runner.regions = GivenRegions(self.runner.regions)
            if detector is not None:
                from tools.extract_regions import extractor_for_store
                self.extractor = extractor_for_store(self.config.data.regions, detector)

    def __call__(self, records: Union[Record, Sequence[Record]]) -> Any:  # a prediction, or a list of them
        single = isinstance(records, (str, dict, tuple))  # a tuple is one record (a GLUE pair), a list a batch
        if not single and not isinstance(records, list):
            raise DataError(f"expected a record (a text, a mapping or a tuple) or a list of them, got "
                            f"{type(records).__name__}")
        examples = [self.task.pipeline_example(r, i, self.config)
                    for i, r in enumerate([records] if single else records)]
        if self.reads_regions:
            self._find_regions(examples)
        predict = getattr(self.runner, "pipeline_predict", self.runner.predict)  # retrieval ranks instead
        flat = predict(examples) if examples else []
        n = self.candidates
        predictions = flat if n == 1 else [flat[i * n:(i + 1) * n] for i in range(len(examples))]
        return predictions[0] if single else predictions

    def _find_regions(self, examples) -> None:
        """Regions of the examples' images (not thread-safe: one call at a time, as the server decodes): with a
        detector an image file is extracted (for this call only); else an image is a name of the store, exactly
        or without its extension, or else, as in annotation files, by its image number -- but for a path or a
        file here, which means that image, not the store's image of the same number."""
        from paddle_unimo.regions.detector import ImageError, read_image
        regions = self.runner.regions
        regions.given.clear()
        for line, name in ((e.line, name) for e in examples for name in self.task.pipeline_images(e)):
            if self.extractor is not None and os.path.isfile(name):
                if name not in regions.given:
                    try:
                        image, _ = read_image(name)
                    except ImageError as err:
                        raise DataError(f"input {line}: {name}: {err}") from None
                    regions.given[name], _ = self.extractor.extract(image, name)
                continue
            named = regions.key(name, by_number=False) is not None
            if not named and (os.path.dirname(name) or os.path.isfile(name) or name not in regions):
                hint = ("no such image file" if self.extractor is not None else
                        "name an image of the store, or give detector= to extract image files")
                raise DataError(f"input {line}: image {name!r} has no regions in {regions.path} ({hint})")
