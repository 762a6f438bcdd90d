"""Export a model for Paddle Inference: the decoding programs of a ``UNIMOLMHeadModel`` (and the stepper that
decodes with them), or the forward program of an understanding model.

An export folder holds two static programs, the two calls ``generate`` makes of its stepper, and a third for
models with image regions:

* ``prefill.json`` / ``prefill.pdiparams``: ``(input_ids, token_type_ids, position_ids, attention_mask)``
  -> ``(logits, k_cache, v_cache)``. The mask is bool "may attend" (N, L, L); the logits are those of the last
  position (N, V); each cache stacks the layers: (num_layers, N, num_heads, L, head_dim).
  A dialog model (``role_type_size``/``turn_type_size`` > 0, CoQA) takes ``role_ids`` and ``turn_ids`` (N, L) too,
  after the mask; the step program gives generated tokens role 0 and turn 0.
* ``step.json`` / ``step.pdiparams``: ``(tokens, token_type, position, source_bias, generated_bias, source_k_<i>,
  source_v_<i>, generated_k_<i>, generated_v_<i>)`` (i = each layer) -> ``(logits, k_cache, v_cache)`` for one
  new token per row (ids (N, 1)) over a ``modeling.DecodingCache``: the prefill's caches (B, nh, S, hd) once per
  source with their additive key bias (B, 1, 1, S), shared by each source's N / B consecutive rows, and the
  generated tokens' buffers (N, nh, T, hd) with the bias (1, 1, 1, T) of the slots written so far. The outputs
  are the new token's keys/values (layers, N, nh, 1, hd), which ``InferenceStepper`` writes into its buffers
  (``generation.StepCache``); the caches are shared with the predictor, never copied.
* ``prefill_regions.json`` / ``prefill_regions.pdiparams``, only when the config has regions
  (``image_embedding_size`` > 0): the prefill of an image-conditioned (captioning) input ``[regions; text]``,
  ``(input_ids, token_type_ids, position_ids, attention_mask, region_feats, region_locs, region_valid)`` ->
  ``(logits, k_cache, v_cache)``, with the (N, R + L, R + L) mask of ``masks.captioning_inputs``, features
  (N, R, D), locations (N, R, 5) and validity (N, R); the caches hold the R + L keys. The step program is the
  same: the regions' keys are part of its source cache.
* ``forward.json`` / ``forward.pdiparams``, instead of the three above for an understanding model (retrieval,
  visual entailment, VQA: ``modeling.UNIMOPairModel``): ``(input_ids, token_type_ids, position_ids,
  attention_mask, region_feats, region_locs, region_valid)`` -> ``logits``, the model's output (retrieval: the
  (N,) match scores; otherwise (N, num_labels)), with the (N, R + L, R + L) mask of ``[regions; text]``; for a
  text classifier (GLUE: ``UNIMOForSequenceClassification``, which reads no regions) ``(input_ids,
  token_type_ids, position_ids, attention_mask)`` -> ``logits`` with the (N, L, L) mask.
  ``InferenceForward(folder)(**inputs)`` runs it.
* ``config.json`` (the model's), ``export.json`` (input and output names, in order, of the programs, and
  ``cpu_kernels``) and the tokenizer files when a tokenizer was given, so that the folder alone is enough to
  deploy.

With ``cpu_kernels`` (``make export FORMAT=kernels``) the decoding programs run this package's CPU operators
(``cpu_kernels``), as dynamic decoding does (``generation.ModelStepper``). The layers' weights and the LM head's
are parameters in panels (``cpu_kernels.pack_weight``) instead of the layers' own (in, out) weights (left out of
every program, ``_without_layer_weights``), so the export grows by the LM head's panels only (a copy of the word
embeddings). The prefill multiplies by them, and each layer of the step is one ``step_layer`` operator, which
writes the token's keys/values into the generated buffers it is fed (shared with the predictor) at ``slot`` (1,)
int64 and reads the written slots where ``parents`` (N, T) int64 names their rows (beam search reorders that
table, not the buffers: ``generation.StepCache``), the inputs that replace ``generated_bias``; the step returns
``logits`` only (exports on the kernels made before ``parents`` must be made again: ``InferenceStepper`` says
so). Such a folder decodes on CPU about as fast as dynamic mode, with its scores bit for bit, but runs only where
the operators are registered: ``InferenceStepper`` builds or loads them (``cpu_kernels.kernels``) before it loads
the programs, and a C++ deployment compiles ``csrc/cpu_kernels.cc`` into its application, as for any Paddle custom
operator. ONNX has no such operators: ``onnx_export`` converts exports without ``cpu_kernels`` only. The panels may
hold bfloat16, int8 or int8_w7 (``panel_dtype``, ``export.json``'s ``panel_dtype``): smaller and faster, with
other scores -- exactly those of ``generation.ModelStepper(model, True, panel_dtype)``.

Batch size, lengths and the number of regions are dynamic. ``InferenceStepper``
runs them with Paddle Inference on CPU and plugs into ``generate``, so greedy, beam search and sampling
work without the model's Python code. It takes every mask form the dynamic model takes (``masks``: bool/int
or PaddleNLP's float additive, (N, L), (N, L, L), (N, 1, L, L), (N, 1, 1, L)) and refuses empty inputs with
a ValueError before they reach Paddle Inference. With ``prefill_regions`` it also decodes captions (pass
``region_feats``/``region_locs``/``region_valid`` to ``generate``); an export without it refuses regions::

    import paddle
    from paddle_unimo import load_tokenizer, masks
    from paddle_unimo.export import InferenceStepper
    from paddle_unimo.generation import generate

    folder = "OUT/inference"                       # written by tools/export_model.py
    tokenizer, stepper = load_tokenizer(folder), InferenceStepper(folder)
    cfg = stepper.config
    sources = [tokenizer.build_inputs_with_special_tokens(tokenizer.encode(t)) for t in ["...", "..."]]
    batch = masks.seq2seq_inputs(sources, [[cfg.bos_token_id]] * len(sources), cfg.pad_token_id,
                                 cfg.position_start, left_pad=True)
    inputs = {k: paddle.to_tensor(v) for k, v in batch.items() if k != "valid"}
    ids, scores = generate(None, **inputs, stepper=stepper, decode_strategy="beam_search", num_beams=5,
                           max_length=50)
    texts = [tokenizer.decode(row) for row in ids.numpy().tolist()]
"""
from __future__ import annotations

import contextlib
import filecmp
import os
import re
import warnings
from typing import Dict, List

import numpy as np
import paddle
import paddle.nn as nn
from paddle.static import InputSpec

from . import cpu_count, masks
from .config import REGION_LOCATION_SIZE, UNIMOConfig
from .cpu_kernels import PackedWeight, pack_weight, slot_tensor
from .fileio import DataError, atomic_dir, first_line, read_json, write_json
from .generation import DecodeState, StepCache, check_inputs, check_regions, last_row_keys
from .generation import to_numpy as _numpy, to_tensor as _tensor
from .modeling import DecodingCache, packed_layer_weights
from .typed import ConfigError

PROGRAMS = ("prefill", "step")
REGION_PROGRAM = "prefill_regions"  # exported only for configs with regions
FORWARD_PROGRAM = "forward"  # the one program of an understanding model
OUTPUTS = ("logits", "k_cache", "v_cache")  # the step's caches: the new token's keys/values only
STEP_CACHES = ("source_k", "source_v", "generated_k", "generated_v")  # the step's per-layer inputs, <name>_<layer>
MANIFEST = "export.json"
CPU_KERNELS = "cpu_kernels"  # the manifest's flag: the programs run paddle_unimo's CPU operators


def is_export(folder: str) -> bool:
    """Whether ``folder`` is an export (``export_model``'s, with its manifest) rather than a checkpoint folder."""
    return os.path.isfile(os.path.join(folder, MANIFEST))


def stack_cache(cache):
    """Per-layer [(k, v)] -> (k, v), each (num_layers, N, num_heads, T, head_dim)."""
    return paddle.stack([k for k, _ in cache]), paddle.stack([v for _, v in cache])


class Prefill(nn.Layer):
    """Encodes the inputs once; returns the next-token logits and the stacked KV cache. With ``panels``
    (``cpu_kernels``) the layers and the head multiply by them, as ``generation.ModelStepper``'s prefill does."""

    def __init__(self, model, panels: "Panels | None" = None):
        super().__init__()
        self.model, self.panels = model, panels  # self.panels registers the panels' parameters with the program
        self.layer_panels = None if panels is None else panels.layers
        self.head_panel = None if panels is None else panels.head

    def forward(self, input_ids, token_type_ids, position_ids, attention_mask, role_ids=None, turn_ids=None):
        return self.encode(input_ids, token_type_ids, position_ids, attention_mask, role_ids=role_ids,
                           turn_ids=turn_ids)

    def encode(self, input_ids, token_type_ids, position_ids, attention_mask, **inputs):
        hidden, cache = self.model.unimo(input_ids, token_type_ids, position_ids, attention_mask, use_cache=True,
                                         last_only=True, packed_weights=self.layer_panels, **inputs)
        return (self.head(hidden), *stack_cache(cache))

    def head(self, hidden):
        """The LM head at the last position only, where the next token is predicted."""
        return self.model.lm_head(hidden[:, -1], packed_decoder=self.head_panel)


class PrefillRegions(Prefill):
    """Encodes ``[regions; text]`` once (captioning); the cache holds the R region keys, then the L text keys."""

    def forward(self, input_ids, token_type_ids, position_ids, attention_mask, region_feats, region_locs,
                region_valid):
        return self.encode(input_ids, token_type_ids, position_ids, attention_mask, region_feats=region_feats,
                           region_locs=region_locs, region_valid=region_valid)


class Forward(nn.Layer):
    """An understanding model's forward over ``[regions; text]`` (token types kept as an input, as in prefill)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids, position_ids, attention_mask, region_feats, region_locs,
                region_valid):
        return self.model(input_ids, position_ids, attention_mask, region_feats, region_locs, region_valid,
                          token_type_ids)


class TextForward(nn.Layer):
    """A text classifier's forward (GLUE's ``UNIMOForSequenceClassification``, which reads no regions)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids, position_ids, attention_mask):
        return self.model(input_ids, position_ids, attention_mask, token_type_ids)


class Step(nn.Layer):
    """Feeds one token per row over a ``modeling.DecodingCache``; returns its logits and its keys/values."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens, token_type, position, source_bias, generated_bias, source_k, source_v, generated_k,
                generated_v):  # the caches: a list of per-layer tensors each
        cache = DecodingCache(source_k, source_v, source_bias, generated_k, generated_v, generated_bias)
        logits, new = self.model(tokens, token_type, position, use_cache=True, cache=cache)
        return (logits[:, -1], *stack_cache(new))


class KernelStep(Prefill):
    """The step on the CPU kernels (an export with ``cpu_kernels``; ``panels`` given): each layer one
    ``cpu_kernels.step_layer`` against the panels, which also writes the token's keys/values into slot ``slot`` of
    the generated buffers fed to it, in place, and reads the written slots where ``parents`` (N, T) says (beam
    search's reordering, ``generation.StepCache``); returns the logits only."""

    def forward(self, tokens, token_type, position, source_bias, slot, parents, source_k, source_v, generated_k,
                generated_v):
        cache = DecodingCache(source_k, source_v, source_bias, generated_k, generated_v, None, slot=slot,
                              parents=parents)
        hidden, _ = self.model.unimo(tokens, token_type, position, use_cache=True, cache=cache,
                                     packed_weights=self.layer_panels)
        return self.head(hidden)


class Panels(nn.Layer):
    """Copies of the layers' weights and the LM head's in panels of ``dtype`` (``cpu_kernels.pack_weight``, as
    ``generation.ModelStepper`` makes them), as parameters of the programs of an export with ``cpu_kernels``."""

    def __init__(self, model, dtype: str = "float32"):
        super().__init__()
        layers = packed_layer_weights(model.unimo.encoder, dtype)
        head = pack_weight(model.lm_head.decoder_weight, transposed=True, dtype=dtype)
        if layers is None or head is None:
            raise RuntimeError("an export with cpu_kernels needs paddle_unimo's CPU kernels (a float32 model on "
                               "CPU, a C++ compiler to build them; see paddle_unimo.cpu_kernels)")

        def parameter(name: str, weight: PackedWeight) -> PackedWeight:
            value = self.create_parameter(weight.packed.shape, dtype=weight.packed.dtype,  # int8 has no random init
                                          default_initializer=nn.initializer.Constant(0))
            value.set_value(weight.packed)
            value.stop_gradient = True
            self.add_parameter(name, value)
            return PackedWeight(value, weight.k, weight.n)

        self.layers = [tuple(parameter(f"layer{i}_panel{j}", w) for j, w in enumerate(ws))
                       for i, ws in enumerate(layers)]
        self.head = parameter("head_panel", head)


def is_dialog(config: UNIMOConfig) -> bool:
    return bool(config.role_type_size or config.turn_type_size)


def input_specs(config: UNIMOConfig, dtype: str = "float32", cpu_kernels: bool = False
                ) -> Dict[str, List[InputSpec]]:
    """The inputs of the programs the config gets; None marks the dynamic batch, length and region axes.
    ``cpu_kernels``: the step takes the slot it writes and the slots' rows (``KernelStep``) instead of
    ``generated_bias``."""
    heads = config.num_attention_heads
    cache = [None, heads, None, config.hidden_size // heads]  # (rows, nh, T, hd), one input per layer
    ids = [None, None]
    prefill = [InputSpec(ids, "int64", "input_ids"), InputSpec(ids, "int64", "token_type_ids"),
               InputSpec(ids, "int64", "position_ids"), InputSpec([None, None, None], "bool", "attention_mask")]
    specs = {
        "prefill": prefill,
        "step": [InputSpec([None, 1], "int64", "tokens"), InputSpec([None, 1], "int64", "token_type"),
                 InputSpec([None, 1], "int64", "position"), InputSpec([None, 1, 1, None], dtype, "source_bias"),
                 *([InputSpec([1], "int64", "slot"), InputSpec([None, None], "int64", "parents")] if cpu_kernels
                   else [InputSpec([1, 1, 1, None], dtype, "generated_bias")]),
                 *([InputSpec(cache, dtype, f"{part}_{i}") for i in range(config.num_hidden_layers)]
                   for part in STEP_CACHES)],
    }
    if is_dialog(config):
        specs["prefill"] = prefill + [InputSpec(ids, "int64", "role_ids"), InputSpec(ids, "int64", "turn_ids")]
    if config.has_regions:
        specs[REGION_PROGRAM] = prefill + [
            InputSpec([None, None, config.image_embedding_size], dtype, "region_feats"),
            InputSpec([None, None, REGION_LOCATION_SIZE], dtype, "region_locs"),
            InputSpec([None, None], "bool", "region_valid")]
    return specs


def _write_export(model, folder: str, tokenizer, cpu_kernels: bool, panel_dtype: str) -> None:
    from .modeling import UNIMOForSequenceClassification, UNIMOPairModel
    dtype = str(model.unimo.embeddings.word_embeddings.weight.dtype).split(".")[-1]
    specs = input_specs(model.config, dtype, cpu_kernels)
    text_only = isinstance(model, UNIMOForSequenceClassification)
    if isinstance(model, UNIMOPairModel):
        if cpu_kernels:
            raise ConfigError(f"cpu_kernels: {type(model).__name__} is an understanding model; the CPU kernels "
                              "run the decoding programs only (export it with the paddle or onnx format)")
        specs = {FORWARD_PROGRAM: specs["prefill" if text_only else REGION_PROGRAM]}
    # paddle.jit.save refuses a feed that no output depends on: keep the unused token-type inputs of a model
    # without token types (English UNIMO) so that both families take the same inputs. region_valid is always
    # unused (the given mask already hides padded regions) but kept, so the program takes what generate takes.
    keep_unused = not model.config.type_vocab_size or is_dialog(model.config)  # (and a dialog model lacking one)
    if FORWARD_PROGRAM in specs:
        wrappers = {FORWARD_PROGRAM: TextForward(model) if text_only else Forward(model)}
    else:
        panels = Panels(model, panel_dtype) if cpu_kernels else None  # one copy, the parameters of every program
        wrappers = {"prefill": Prefill(model, panels), REGION_PROGRAM: PrefillRegions(model, panels),
                    "step": KernelStep(model, panels) if cpu_kernels else Step(model)}
    with _without_layer_weights(model) if cpu_kernels else contextlib.nullcontext():
        for name in specs:
            static = paddle.jit.to_static(wrappers[name], input_spec=specs[name], full_graph=True)
            with warnings.catch_warnings():  # paddle.jit.save's own code asks PIR values for .place (3.3.1)
                warnings.filterwarnings("ignore", message="Tensor do not have 'place' interface")
                paddle.jit.save(static, os.path.join(folder, name),
                                skip_prune_program=keep_unused or name in (REGION_PROGRAM, FORWARD_PROGRAM))
    for name in specs:
        if name not in ("prefill", FORWARD_PROGRAM):
            _share_identical(os.path.join(folder, "prefill.pdiparams"), os.path.join(folder, name + ".pdiparams"))
    write_json(os.path.join(folder, MANIFEST), _manifest(specs, cpu_kernels, panel_dtype))
    model.config.save(os.path.join(folder, "config.json"), type(model).__name__)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


@contextlib.contextmanager
def _without_layer_weights(model):
    """The layers' own weights taken out of ``model`` while the programs on the panels are traced and saved: they
    multiply by the panels only, but a program saved unpruned (``prefill_regions``; every program of a model without
    token types, which keeps its unused inputs) would hold the weights besides the panels, twice the parameters."""
    linears = [lin for layer in model.unimo.encoder.layers for lin in layer.step_linears()]
    weights = [lin._parameters.pop("weight") for lin in linears]
    try:
        yield
    finally:
        for lin, weight in zip(linears, weights):
            lin._parameters["weight"] = weight


def _manifest(specs: Dict[str, List[InputSpec]], cpu_kernels: bool, panel_dtype: str) -> dict:
    """What a deployer needs to feed the programs without this package: names, shapes (-1: dynamic), dtypes;
    ``cpu_kernels``: whether they run this package's CPU operators, and ``panel_dtype`` the weights' type there."""
    def describe(spec):
        return {"name": spec.name, "shape": [-1 if d is None else d for d in spec.shape],
                "dtype": str(spec.dtype).split(".")[-1]}

    def outputs(name):
        return ["logits"] if name == FORWARD_PROGRAM or (name == "step" and cpu_kernels) else list(OUTPUTS)
    programs = {name: {"inputs": [describe(s) for s in _flat(inputs)], "outputs": outputs(name)}
                for name, inputs in specs.items()}
    kernels = {CPU_KERNELS: cpu_kernels, **({"panel_dtype": panel_dtype} if cpu_kernels else {})}
    return {"paddle_version": paddle.__version__, **kernels, **programs}


def _flat(specs):
    return [s for spec in specs for s in (spec if isinstance(spec, list) else [spec])]


def _share_identical(first: str, second: str) -> None:
    """Hard-links ``second`` to ``first`` when their bytes are equal: both programs use the same weights,
    so this halves the export on disk. Where links are not supported the two copies stay."""
    if not filecmp.cmp(first, second, shallow=False):
        return
    try:
        os.link(first, second + ".link")
        os.replace(second + ".link", second)
    except OSError:
        pass


def _check_replaceable(out_dir: str) -> None:
    """Only an empty folder or a previous export is replaced: a mistyped --out must not eat a model folder."""
    if not os.path.exists(out_dir):
        return
    if not os.path.isdir(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    if os.listdir(out_dir) and not os.path.isfile(os.path.join(out_dir, MANIFEST)):
        raise FileExistsError(f"{out_dir} is not empty and holds no previous export ({MANIFEST}); "
                              "refusing to replace it")


def export_model(model, out_dir: str, tokenizer=None, cpu_kernels: bool = False, panel_dtype: str = "float32"
                 ) -> str:
    """Writes the prefill and step programs (and prefill_regions for a config with regions), config and
    tokenizer into ``out_dir`` (see the module doc); for an understanding model the forward program instead
    (``cpu_kernels`` is refused for it). ``cpu_kernels``: the decoding programs run this package's
    CPU kernels (see the module doc), with the weights in panels of ``panel_dtype`` (float32; bfloat16, the weights
    rounded; int8, weights and inputs quantized; int8_w7, with 7-bit weights: as ``generation.ModelStepper(...,
    panel_dtype=)`` decodes).

    Everything is written into a temporary folder beside ``out_dir`` that replaces it only at the end
    (``fileio.atomic_dir``), so a failure never leaves a half-written export and keeps a previous one whole.
    The model is left in the train/eval mode it was in.
    """
    out_dir = os.path.abspath(out_dir)
    _check_replaceable(out_dir)
    if panel_dtype != "float32" and not cpu_kernels:
        raise ValueError(f"panel_dtype={panel_dtype!r} needs cpu_kernels=True: only the kernels' panels take it")
    was_training = model.training
    model.eval()  # dropout is traced into the program as it is at export time
    try:
        with atomic_dir(out_dir) as tmp:
            _write_export(model, tmp, tokenizer, cpu_kernels, panel_dtype)
    finally:
        if was_training:
            model.train()
    return out_dir


# ---- running an export -----------------------------------------------------------------------------------

def prefill_mask(attention_mask, input_ids, pad_id: int) -> np.ndarray:
    """Whatever ``generate`` got as ``attention_mask`` -> the bool "may attend" (N, L, L) the program takes.

    None: bidirectional over non-pad tokens (the model's default); any form the model accepts
    (``masks.may_attend_bool``): bool/int or PaddleNLP's float additive, (N, L), (N, L, L), (N, 1, L, L) or a
    row shared by every query (N, 1, 1, L).
    """
    input_ids = _tensor(input_ids)
    n, length = input_ids.shape
    if attention_mask is None:
        valid = input_ids != pad_id
        return masks.may_attend(valid, paddle.zeros(valid.shape, "int64")).numpy()
    mask = masks.may_attend_bool(_tensor(attention_mask), num_queries=length)
    if list(mask.shape) != [n, length, length]:
        raise ValueError(f"attention_mask shape {list(attention_mask.shape)} does not fit input_ids {[n, length]}")
    return mask.numpy()


def _map_outputs(found: List[str], expected: List[str], program: str) -> Dict[str, str]:
    """Predictor output name -> our name. paddle 3.3.1 names unnamed PIR outputs ``fetch_name_<position>``,
    so a position is read from the name, never assumed from the listing order."""
    if sorted(found) == sorted(expected):
        return {name: name for name in found}
    positions = [re.fullmatch(r"fetch_name_(\d+)", name) for name in found]
    if all(positions) and sorted(int(m.group(1)) for m in positions) == list(range(len(expected))):
        return {name: expected[int(m.group(1))] for name, m in zip(found, positions)}
    raise ValueError(f"{program}: outputs {found} do not match the expected {expected}")


def dynamic_mode_threads() -> int:
    """The math-library threads of dynamic mode: ``OMP_NUM_THREADS`` (``paddle_unimo.cpu_defaults`` sets it to
    the cores this process may use when the user has not), else those cores."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else cpu_count()


class KernelsUnavailable(RuntimeError, ConfigError):
    """An export of the CPU kernels where they are turned off or could not be built."""


def _load_kernels(folder: str) -> None:
    """Registers this package's CPU operators, which an export with ``cpu_kernels`` runs, before its programs are
    loaded."""
    from .cpu_kernels import kernels
    if kernels() is None:
        why = ("which PADDLE_UNIMO_CPU_KERNELS=0 turns off: unset it" if os.environ.get("PADDLE_UNIMO_CPU_KERNELS")
               == "0" else "which could not be built here (see the warning above; a C++ compiler is needed)")
        raise KernelsUnavailable(f"{folder} was exported with cpu_kernels: its programs run paddle_unimo's CPU "
                                 f"operators, {why}")


class Program:
    """One exported program under Paddle Inference on CPU, fed and read by name."""

    def __init__(self, folder: str, name: str, outputs: List[str], num_threads: int):
        config = paddle.inference.Config(os.path.join(folder, name + ".json"),
                                         os.path.join(folder, name + ".pdiparams"))
        config.disable_gpu()
        # oneDNN off: Paddle Inference 3.3.1 turns it on for CPU, and its kernels made a beam-6 decoding step
        # (24 rows, 12 layers) 1.6x slower than MKL's (335 against 215 ms, the same as dynamic mode's), while a
        # greedy step and the prefill took the same time either way; MKL also gives dynamic mode's values exactly
        config.disable_mkldnn()
        config.set_cpu_math_library_num_threads(num_threads)
        config.disable_glog_info()
        self.name = name
        try:
            self.predictor = paddle.inference.create_predictor(config)
        except Exception as e:  # a file cut short, or not an export: paddle's own error, one line of it
            raise DataError(f"{os.path.join(folder, name)}.json/.pdiparams: Paddle Inference cannot load them "
                            f"({type(e).__name__}: {first_line(e)}); damaged? make export writes them again") from e
        self.inputs = self.predictor.get_input_names()
        # made once: getting the step's ~50 handles anew took 0.35 ms a step (unimo-text-1.0)
        self.input_handles = {name: self.predictor.get_input_handle(name) for name in self.inputs}
        self.output_handles = {ours: self.predictor.get_output_handle(theirs) for theirs, ours in
                               _map_outputs(self.predictor.get_output_names(), outputs, name).items()}

    def __call__(self, **feeds) -> Dict[str, np.ndarray]:
        """Runs the program on feeds shared with the predictor, never copied (the decoding caches are large). Every
        feed goes in as a paddle tensor, kept alive until the next call: mixing shared and copied feeds on one
        input handle corrupts the heap in Paddle Inference 3.3.1."""
        missing = [name for name in self.inputs if name not in feeds]
        if missing:
            raise KeyError(f"{self.name}: inputs {missing} not given (have {sorted(feeds)})")
        self._fed = {name: _tensor(np.ascontiguousarray(feeds[name]) if isinstance(feeds[name], np.ndarray)
                                   else feeds[name]).contiguous() for name in self.inputs}
        for name, value in self._fed.items():
            self.input_handles[name].share_external_data(value)
        self.predictor.run()
        # a Paddle Inference 3.3.1 run leaves the process's math-library threads changed: dynamic-mode matmuls
        # after it ran at half their rate (60 against 122 GFLOP/s, 2 cores) until they were set back
        paddle.base.core.set_num_threads(dynamic_mode_threads())
        return {ours: handle.copy_to_cpu() for ours, handle in self.output_handles.items()}


class InferenceForward:
    """The forward program of an exported understanding model: ``__call__(**inputs) -> logits`` (numpy), taking
    the keyword inputs of the dynamic model's forward (``token_type_ids`` may be left out: zeros; the regions
    only where the program reads them, i.e. not for a text classifier)."""

    def __init__(self, folder: str, num_threads: int | None = None, program_class=None):
        self.config = UNIMOConfig.from_file(os.path.join(folder, "config.json"))
        self.program = (program_class or Program)(folder, FORWARD_PROGRAM, ["logits"], num_threads or cpu_count())
        self.reads_regions = "region_feats" in self.program.inputs

    def __call__(self, input_ids, position_ids, attention_mask, region_feats=None, region_locs=None,
                 region_valid=None, token_type_ids=None) -> np.ndarray:
        input_ids = _numpy(input_ids)
        if (region_feats is not None) != self.reads_regions:
            raise ValueError("this forward program reads image regions: give region_feats and region_locs"
                             if self.reads_regions else "this forward program (a text classifier) reads no regions")
        mask = _tensor(attention_mask)  # any form the model takes, as prefill_mask reads it: bool/int or float
        feeds = dict(input_ids=input_ids, position_ids=position_ids,
                     attention_mask=masks.may_attend_bool(mask, num_queries=mask.shape[-1]).numpy(),
                     token_type_ids=np.zeros_like(input_ids) if token_type_ids is None else token_type_ids)
        if self.reads_regions:
            region_valid = np.ones(_numpy(region_feats).shape[:2], bool) if region_valid is None else region_valid
            feeds.update(region_feats=region_feats, region_locs=region_locs,
                         region_valid=_numpy(region_valid).astype(bool))
        return self.program(**feeds)["logits"]


class InferenceStepper:
    """The decoding stepper of an export folder (see ``generation.generate(..., stepper=)``).

    The KV cache is a ``generation.StepCache`` of paddle tensors, fed to the step program without a copy (an
    export with ``cpu_kernels`` writes each step's keys/values into it; this class loads the kernels first).
    ``supports_regions``: the folder has ``prefill_regions``, so ``generate`` may pass image regions.
    """

    def __init__(self, folder: str, num_threads: int | None = None, program_class=None):
        self.folder = folder
        self.config = UNIMOConfig.from_file(os.path.join(folder, "config.json"))
        manifest = read_json(os.path.join(folder, MANIFEST), "export manifest")
        threads = num_threads or cpu_count()  # the cores this process may use, not all
        names = PROGRAMS + ((REGION_PROGRAM,) if REGION_PROGRAM in manifest else ())
        program_class = program_class or Program
        self.cpu_kernels = bool(manifest.get(CPU_KERNELS))
        self.panel_dtype = manifest.get("panel_dtype", "float32")  # the weights' type (exports on the kernels)
        if self.cpu_kernels:
            if "parents" not in (spec["name"] for spec in manifest["step"]["inputs"]):
                raise ValueError(f"{folder}: this export on the CPU kernels predates the step's 'parents' input "
                                 "(beam search's reordering table); export the model again (make export "
                                 "FORMAT=kernels)")
            _load_kernels(folder)
        self.programs = {name: program_class(folder, name, manifest[name]["outputs"], threads) for name in names}
        self.supports_regions = REGION_PROGRAM in self.programs
        region_inputs = manifest.get(REGION_PROGRAM, {}).get("inputs", [])
        self.region_dtype = next((s["dtype"] for s in region_inputs if s["name"] == "region_feats"), "float32")

    def prefill(self, input_ids, token_type_ids, position_ids, attention_mask, region_feats=None, region_locs=None,
                region_valid=None, role_ids=None, turn_ids=None, max_new_tokens: int = 32):
        """Checks the inputs (``generation.check_regions`` and ``check_inputs``: Paddle Inference crashes on empty
        ones), then encodes them; with regions through ``prefill_regions``, ``attention_mask`` being the
        (N, R + L, R + L) one (``region_valid`` None: every region valid). A dialog model's ``role_ids``/``turn_ids``
        default to 0, as in the dynamic model. ``max_new_tokens`` sizes the generated buffers."""
        input_ids, token_type_ids, position_ids = map(_tensor, (input_ids, token_type_ids, position_ids))
        if attention_mask is not None:
            attention_mask = _tensor(attention_mask)
        where = "InferenceStepper.prefill"
        num_regions = check_regions(self, input_ids.shape[0], region_feats, region_locs, region_valid, where)
        check_inputs(input_ids, attention_mask, self.config.pad_token_id, where, num_regions=num_regions)
        feeds = dict(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids)
        if region_feats is not None and (role_ids is not None or turn_ids is not None):
            raise ValueError(f"{where}: the exported prefill_regions program takes no role_ids/turn_ids")
        if region_feats is None:
            dialog = {k: np.zeros(input_ids.shape, "int64") if v is None else v
                      for k, v in (("role_ids", role_ids), ("turn_ids", turn_ids)) if is_dialog(self.config)}
            out = self.programs["prefill"](
                **feeds, **dialog, attention_mask=prefill_mask(attention_mask, input_ids, self.config.pad_token_id))
        else:
            dtype, keys = self.region_dtype, num_regions + input_ids.shape[1]
            valid = (np.ones(region_feats.shape[:2], bool) if region_valid is None
                     else _numpy(region_valid).astype(bool))
            out = self.programs[REGION_PROGRAM](
                **feeds, attention_mask=masks.may_attend_bool(attention_mask, num_queries=keys).numpy(),
                region_feats=_numpy(region_feats).astype(dtype), region_locs=_numpy(region_locs).astype(dtype),
                region_valid=valid)
        keys = StepCache(list(paddle.to_tensor(out["k_cache"])), list(paddle.to_tensor(out["v_cache"])),
                         last_row_keys(attention_mask, input_ids, self.config.pad_token_id), max_new_tokens)
        return paddle.to_tensor(out["logits"]), DecodeState(keys, position_ids[:, -1:], token_type_ids[:, -1:])

    def step(self, tokens, state: DecodeState):
        """One step of the step program; the caches stay paddle tensors shared with the predictor. On the CPU
        kernels the program writes the new keys/values into its slot of the generated buffers itself."""
        cache = state.cache.model_cache(in_place=self.cpu_kernels)
        layers = range(self.config.num_hidden_layers)
        feeds = {f"{part}_{i}": getattr(cache, part)[i] for part in STEP_CACHES for i in layers}
        if self.cpu_kernels:
            feeds["slot"], feeds["parents"] = slot_tensor(cache.slot), cache.parents
        else:
            feeds["generated_bias"] = cache.generated_bias
        out = self.programs["step"](tokens=tokens, token_type=state.token_type, position=state.position,
                                    source_bias=cache.source_bias, **feeds)
        if not self.cpu_kernels:
            state.cache.write(paddle.to_tensor(out["k_cache"]), paddle.to_tensor(out["v_cache"]))
        return paddle.to_tensor(out["logits"])

    @staticmethod
    def select_cache(cache: StepCache, index):
        return cache.select(index)
