"""CPU benchmark: one table of speed ratios, all measured in one process on the same weights and inputs.

    python -m tools.benchmark_cpu [--layers 12] [--batch 4] [--src-len 96] [--new-tokens 20] [--beams 6]
                                  [--repeats 3] [--skip-train] [--skip-export] [--profile]

Rows (ratio = reference time / ours, above 1 means ours is faster):

* forward, greedy and beam search against PaddleNLP's ``UNIMOLMHeadModel`` (unimo-text-1.0 shape, random
  weights saved by PaddleNLP and loaded by ours), with identical-ids flags; our decoding runs as ``make predict``
  runs it, with the layer weights packed once per model (``generation.batch_stepper``; its time is a row);
* a training step (AdamW, label smoothing 0.1, batch 8 x 128 tokens with a 32-token target; each side clearing
  its gradients as its own trainer does) against PaddleNLP's, its share of the machine's fp32 matmul rate
  (measured in the same rounds) on the step's matmul FLOPs (3x the forward's), the peak RSS of each (each in a
  fresh process) and our step's page faults (the fewest of three steps in a row); ours also against itself on
  paddle's own dropout, layer_norm and softmax instead of the CPU training kernels (``paddle_unimo.cpu_kernels``);
* one greedy step against reading its weights once (the fp32 floor of a decoding step of few rows);
* the exported Paddle Inference decoding (``paddle_unimo.export``; on paddle's operators, and on the CPU kernels:
  ``export_model(..., cpu_kernels=True)``, in float32, bfloat16, int8 and int8_w7 panels), and its ONNX Runtime
  twins (fp32 and int8) when onnxruntime is installed (``paddle_unimo.onnx_export``), against our dynamic decoding,
  with the share of equal tokens when the ids differ;
* with ``--profile``, where one decoding's time goes: prefill, steps (the model), cache handling (writes,
  beam reordering), search bookkeeping.

Timings are the best of ``--repeats`` runs; the printed figures are for a quiet machine only. No pass/fail.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import paddle_unimo

ROWS = []  # (figure, ours, reference, ratio, note)


def best_of(*fns, repeats: int):
    """The best time of each function over ``repeats`` rounds, the functions taking turns within a round, so
    that a change in the machine's load falls on all of them alike. One function: a float, else a list."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    best = [min(spent) for spent in times]
    return best[0] if len(fns) == 1 else best


def row(figure: str, ours: float, reference: float, note: str = "", unit: str = "s") -> None:
    ROWS.append((figure, f"{ours:.3f} {unit}", f"{reference:.3f} {unit}", f"x{reference / ours:.2f}", note))


def at_least(low: int):
    """An argparse type: an integer >= ``low``."""
    def parse(text: str) -> int:
        if not text.lstrip("-").isdigit() or int(text) < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {low}")
        return int(text)
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=at_least(1), default=12, help="transformer layers (default 12, the "
                        "unimo-text-1.0 shape)")
    parser.add_argument("--batch", type=at_least(1), default=4, help="sources decoded together (default 4)")
    parser.add_argument("--src-len", type=at_least(1), default=96, help="tokens of each source (default 96)")
    parser.add_argument("--new-tokens", type=at_least(1), default=20, help="tokens generated (default 20)")
    parser.add_argument("--beams", type=at_least(2), default=6, help="beam search's beams (>= 2, default 6)")
    parser.add_argument("--repeats", type=at_least(1), default=3, help="timed runs of each row; the fastest "
                        "counts (default 3)")
    parser.add_argument("--skip-train", action="store_true", help="leave out the training-step rows")
    parser.add_argument("--skip-export", action="store_true", help="leave out the exported (and ONNX) rows")
    parser.add_argument("--profile", action="store_true", help="split one beam decoding's time")
    parser.add_argument("--rss", choices=("ours", "paddlenlp"), help=argparse.SUPPRESS)  # a child process
    return parser.parse_args(argv)


def matmuls(count: int = 1):
    """``count`` fp32 2048^3 paddle.matmul calls as one function, and their FLOPs."""
    import paddle
    a, b = paddle.randn([2048, 2048]), paddle.randn([2048, 2048])
    return (lambda: [paddle.matmul(a, b).numpy() for _ in range(count)]), count * 2 * 2048 ** 3


def matmul_gflops() -> float:
    """fp32 2048^3 paddle.matmul rate of this process (after ``cpu_defaults``)."""
    run, flops = matmuls()
    run()
    return flops / best_of(run, repeats=5) / 1e9


def bench_step_floor(ours, stepper, inputs, args) -> None:
    """One greedy decoding step of the dynamic model against the time this process takes to read the same
    weights once, by matmuls of the step's shape (rows x hidden times (N x hidden)^T, N = the weights' total
    rows) against packed weights, as the step's (``cpu_kernels.pack_weight``): a ratio near 1 means the step is
    bound by reading the weights, as fp32 decoding of few rows is."""
    import paddle
    from paddle_unimo.cpu_kernels import pack_weight, packed_linear
    with paddle.no_grad():
        logits, state = stepper.prefill(**inputs, max_new_tokens=args.new_tokens)
        tokens = logits.argmax(axis=-1, keepdim=True)
        written = state.cache.length

        def step():  # the same step again: into the same slot
            state.cache.length = written
            return stepper.step(tokens, state).numpy()
        step()
        hidden = ours.config.hidden_size
        columns = sum(int(p.numel()) for n, p in ours.named_parameters()
                      if len(p.shape) == 2 and "embeddings" not in n) // hidden + ours.config.vocab_size
        rows = paddle.randn([tokens.shape[0], hidden])
        chunks = [paddle.randn([4096, hidden]) for _ in range(columns // 4096 + 1)]
        packed = [pack_weight(w, transposed=True) for w in chunks]
        if None in packed:  # no kernels: paddle's matmul, as the step's
            read = lambda: [paddle.matmul(rows, w, transpose_y=True).numpy() for w in chunks]
        else:
            bias = paddle.zeros([4096])
            read = lambda: [packed_linear(rows, w, bias).numpy() for w in packed]
        read()
        t_step, t_read = best_of(step, read, repeats=args.repeats * 3)
    row(f"greedy step ({tokens.shape[0]} rows) vs reading its weights once", t_step * 1e3,
        t_read * 1e3 * columns / (len(chunks) * 4096), f"{4 * hidden * columns / 2 ** 20:.0f} MiB of weights",
        unit="ms")


def copy_step_weights(ours):
    """Our dynamic decoding's stepper, as ``make predict`` makes it (``generation.batch_stepper``): its copy of
    the weights packed is made once per model, and reported, not timed with each decoding (nor with the
    kernels' one-time build for this machine, done before)."""
    from paddle_unimo.cpu_kernels import kernels
    from paddle_unimo.generation import batch_stepper
    kernels()
    start = time.perf_counter()
    stepper = batch_stepper(ours)
    seconds = time.perf_counter() - start
    packed = [w for layer in stepper.weights for w in layer] + [stepper.head] if stepper.weights else []
    size = sum(w.k * w.n * 4 for w in packed) / 2 ** 20  # the weights' own size (about what the copies take)
    ROWS.append(("packed layer weights (once per model)", f"{seconds:.3f} s", "-", "-", f"{size:.0f} MiB"))
    return stepper


def build_models(layers: int):
    """PaddleNLP's model (unimo-text-1.0 shape, random weights) and ours loaded from its saved folder."""
    import paddle
    from paddlenlp.transformers import UNIMOConfig as RefConfig
    from paddlenlp.transformers import UNIMOLMHeadModel as RefModel

    from paddle_unimo import UNIMOLMHeadModel

    paddle.seed(0)
    ref = RefModel(RefConfig(num_hidden_layers=layers))
    ref.eval()
    with tempfile.TemporaryDirectory() as folder:
        ref.save_pretrained(folder)
        ours = UNIMOLMHeadModel.from_pretrained(folder)
    return ref, ours


def make_inputs(batch: int, src_len: int) -> dict:
    import numpy as np
    import paddle

    rng = np.random.default_rng(0)
    ids = paddle.to_tensor(rng.integers(5, 17000, (batch, src_len)))
    ids[:, -1] = 1  # the target's [CLS]: decoding starts here
    # Explicit inputs: paddlenlp's default-position path fails on paddle 3 (expand_as on a shape tensor).
    return dict(input_ids=ids, token_type_ids=paddle.zeros_like(ids),
                position_ids=paddle.arange(src_len).expand([batch, src_len]),
                attention_mask=paddle.zeros([batch, 1, 1, src_len]))


def decode_settings(args) -> dict:
    greedy = dict(max_length=args.new_tokens, min_length=args.new_tokens)
    return {"greedy": greedy,
            f"beam {args.beams}": dict(greedy, decode_strategy="beam_search", num_beams=args.beams,
                                       length_penalty=1.2)}


def bench_against_paddlenlp(ref, ours, stepper, inputs, args) -> None:
    import paddle

    from paddle_unimo.generation import generate
    with paddle.no_grad():
        diff = float((ours(**inputs) - ref(**inputs)).abs().max())
        t_ref, t_ours = best_of(lambda: ref(**inputs).numpy(), lambda: ours(**inputs).numpy(),
                                repeats=args.repeats)
    row(f"forward {args.batch}x{args.src_len} vs PaddleNLP", t_ours, t_ref, f"max |logit diff| {diff:.1e}")
    for name, kwargs in decode_settings(args).items():
        ref_kwargs = {"decode_strategy": "greedy_search", **kwargs, "use_fast": False}
        ours_ids = generate(ours, **inputs, stepper=stepper, **kwargs)[0].numpy()
        same = bool((ref.generate(**inputs, **ref_kwargs)[0].numpy() == ours_ids).all())
        t_ref, t_ours = best_of(lambda: ref.generate(**inputs, **ref_kwargs),
                                lambda: generate(ours, **inputs, stepper=stepper, **kwargs), repeats=args.repeats)
        row(f"{name}, {args.new_tokens} new x {args.batch} vs PaddleNLP", t_ours, t_ref, f"same ids: {same}")


def bench_exported(ours, dynamic, inputs, args) -> None:
    """Paddle Inference (and ONNX Runtime) decoding of the exported model against dynamic decoding."""
    from paddle_unimo.cpu_kernels import PANEL_DTYPES
    from paddle_unimo.export import InferenceStepper, export_model
    from paddle_unimo.generation import generate
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_model(ours, os.path.join(tmp, "inference"))
        steppers = {"Paddle Inference": InferenceStepper(folder)}
        for dtype in PANEL_DTYPES:
            kernels = export_model(ours, os.path.join(tmp, dtype), cpu_kernels=True, panel_dtype=dtype)
            steppers["Paddle Inference, CPU kernels" + ("" if dtype == "float32" else f", {dtype}")] = \
                InferenceStepper(kernels)
        try:
            from paddle_unimo.onnx_export import OnnxStepper, export_onnx
            export_onnx(folder, quantize="int8")
            steppers["ONNX Runtime"] = OnnxStepper(folder, int8=False)
            steppers["ONNX Runtime int8"] = OnnxStepper(folder, int8=True)
        except ImportError as e:
            ROWS.append(("ONNX Runtime decoding", "-", "-", "-", f"skipped: {e}"))
        for name, kwargs in decode_settings(args).items():
            dynamic_ids = generate(ours, **inputs, stepper=dynamic, **kwargs)[0].numpy()
            exported = [lambda stepper=stepper: generate(None, **inputs, stepper=stepper, **kwargs)
                        for stepper in steppers.values()]
            equal = [float((run()[0].numpy() == dynamic_ids).mean()) for run in exported]
            t_dynamic, *times = best_of(lambda: generate(ours, **inputs, stepper=dynamic, **kwargs), *exported,
                                        repeats=args.repeats)
            for runtime, t, share in zip(steppers, times, equal):
                row(f"{runtime} {name} vs dynamic", t, t_dynamic,
                    f"same ids: {share == 1.0}" + ("" if share == 1.0 else f", {share:.0%} equal tokens"))


def profile_decoding(stepper, inputs, kwargs, label: str) -> None:
    """One decoding's time split: prefill, steps (model), cache handling (writes, reordering), bookkeeping."""
    from paddle_unimo import generation
    spent = defaultdict(float)

    def timed(fn, key):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.perf_counter() - start
        return wrapper

    class Timed:
        config, supports_regions = stepper.config, stepper.supports_regions
        prefill = staticmethod(timed(stepper.prefill, "prefill"))
        step = staticmethod(timed(stepper.step, "step"))
        select_cache = staticmethod(timed(stepper.select_cache, "cache"))

    cache_class = getattr(generation, "StepCache", None)  # (absent before the shared-source cache)
    write = cache_class.write if cache_class else None
    if cache_class:
        cache_class.write = timed(write, "write")
    try:
        generation.generate(None, **inputs, stepper=Timed(), **kwargs)  # warm-up
        spent.clear()
        start = time.perf_counter()
        generation.generate(None, **inputs, stepper=Timed(), **kwargs)
        total = time.perf_counter() - start
    finally:
        if cache_class:
            cache_class.write = write
    parts = {"prefill": spent["prefill"], "steps (model)": spent["step"] - spent["write"],
             "cache (write, reorder)": spent["write"] + spent["cache"],
             "search bookkeeping": total - spent["prefill"] - spent["step"] - spent["cache"]}
    print(f"{label}: {total:.2f} s = " + ", ".join(f"{k} {v:.2f} s ({v / total:.0%})" for k, v in parts.items()))


def train_batch():
    import numpy as np
    import paddle

    from paddle_unimo.data.seq2seq import Encoded, training_batch
    rng = np.random.default_rng(1)
    items = [Encoded(rng.integers(5, 17000, 96).tolist(), rng.integers(5, 17000, 32).tolist()) for _ in range(8)]
    return {k: paddle.to_tensor(v) for k, v in training_batch(items, 0, 0).items()}


def train_step(model, batch, reference: bool):
    """One AdamW step's closure: PaddleNLP's recipe for its model (float mask, F.label_smooth + soft-label
    cross-entropy, as the 千言 baseline; its Trainer's ``clear_grad()``, which zero-fills the gradients), ours
    (bool mask, logsumexp label smoothing; our Trainer's ``clear_grad(set_to_zero=False)``, which frees them, so
    the next backward writes new ones instead of adding to zeros) for ours."""
    import paddle
    import paddle.nn.functional as F

    from paddle_unimo.losses import label_smoothed_cross_entropy
    model.train()
    opt = paddle.optimizer.AdamW(5e-5, beta2=0.98, epsilon=1e-6, parameters=model.parameters(), weight_decay=0.01)
    mask = batch["attention_mask"]
    if reference:
        mask = paddle.where(mask, paddle.zeros([1]), paddle.full([1], -1e4)).unsqueeze(1)
    vocab = model.config.vocab_size

    def step():
        logits = model(batch["input_ids"], batch["token_type_ids"], batch["position_ids"], mask,
                       masked_positions=batch["masked_positions"])
        if reference:
            soft = F.label_smooth(F.one_hot(batch["labels"], vocab), epsilon=0.1)
            loss = F.cross_entropy(logits, soft, soft_label=True).mean()
        else:
            loss = label_smoothed_cross_entropy(logits, batch["labels"], 0.1)
        loss.backward()
        opt.step()
        opt.clear_grad(set_to_zero=reference)
    return step


def step_matmul_flops(config, batch) -> float:
    """Matmul FLOPs of one training step: 3x the forward's (the backward computes two products per product)."""
    b, s = batch["input_ids"].shape
    h, i, t, n = config.hidden_size, config.intermediate_size, b * s, batch["labels"].shape[0]
    layer = 8 * t * h * h + 4 * t * h * i + 4 * b * s * s * h  # q/k/v/out, the FFN, scores and weighted sum
    head = 2 * n * h * h + 2 * n * h * config.vocab_size  # the LM head on the target positions only
    return 3.0 * (config.num_hidden_layers * layer + head)


def page_faults(fn) -> int:
    """The page faults of one call of ``fn`` (none once glibc keeps freed memory: ``keep_freed_memory``)."""
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def peak_rss(which: str, layers: int) -> float:
    """Peak RSS (MiB) of a fresh process building the model and running two training steps."""
    out = subprocess.run([sys.executable, "-m", "tools.benchmark_cpu", "--rss", which, "--layers", str(layers)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def peak_rss_mib() -> float:
    """This process's peak RSS in MiB: ``VmHWM`` where /proc has it. ``ru_maxrss`` is no good in a child: Linux
    carries the parent's peak over fork and exec, so each child of this benchmark reported the parent's RSS."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(which: str, layers: int) -> int:
    import paddle
    paddle.seed(0)
    if which == "ours":
        from paddle_unimo import UNIMOLMHeadModel, get_preset
        model = UNIMOLMHeadModel(get_preset("unimo-text-1.0", num_hidden_layers=layers))
    else:
        from paddlenlp.transformers import UNIMOConfig, UNIMOLMHeadModel
        model = UNIMOLMHeadModel(UNIMOConfig(num_hidden_layers=layers))
    step = train_step(model, train_batch(), reference=which == "paddlenlp")
    step()
    step()
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}))
    return 0


def bench_training(ref, ours, args) -> None:
    """The training steps, and the matmul rate they are held against measured in the same rounds (so that a
    change in the machine's load falls on both); ours also with paddle's own dropout, layer_norm and softmax
    instead of the CPU training kernels (``paddle_unimo.cpu_kernels``)."""
    from paddle_unimo import cpu_kernels
    batch = train_batch()
    steps = [train_step(model, batch, reference) for model, reference in ((ref, True), (ours, False))]
    step_ours = steps[1]

    def without_kernels():
        with cpu_kernels.paddle_ops():
            step_ours()
    for step in (*steps, without_kernels):
        step()  # warm-up
    rate, flops = matmuls(10)
    t_ref, t_ours, t_paddle_ops, t_rate = best_of(*steps, without_kernels, rate, repeats=args.repeats)
    gflops = flops / t_rate / 1e9
    share = step_matmul_flops(ours.config, batch) / t_ours / 1e9 / gflops
    faults = min(page_faults(step_ours) for _ in range(3))  # the heap grows over the first rounds
    rss = {which: peak_rss(which, args.layers) for which in ("ours", "paddlenlp")}
    row("train step 8x128 vs PaddleNLP", t_ours, t_ref,
        f"{share:.0%} of the matmul rate ({gflops:.0f} GFLOP/s in the same rounds); "
        f"peak RSS {rss['ours']:.0f} / {rss['paddlenlp']:.0f} MiB; {faults} page faults in a step")
    built = cpu_kernels.kernels() is not None
    row("train step: CPU kernels vs paddle's dropout, layer_norm, softmax", t_ours, t_paddle_ops,
        "" if built else "kernels not built: both ran paddle's ops")
    for model in (ref, ours):
        model.eval()


def print_table() -> None:
    widths = [max(len(str(r[i])) for r in ROWS + [("figure", "ours", "reference", "ratio", "note")])
              for i in range(5)]
    header = ("figure", "ours", "reference", "ratio", "note")
    for line in (header, tuple("-" * w for w in widths), *ROWS):
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip())


def main(argv=None) -> int:
    paddle_unimo.cpu_defaults()
    args = parse_args(argv)
    if args.rss:
        return rss_child(args.rss, args.layers)
    gflops = matmul_gflops()
    ROWS.append(("fp32 matmul 2048^3", f"{gflops:.1f} GFLOP/s", "-", "-",
                 f"this process, MKL_DEBUG_CPU_TYPE={os.environ.get('MKL_DEBUG_CPU_TYPE', '')} "
                 f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}"))
    ref, ours = build_models(args.layers)
    inputs = make_inputs(args.batch, args.src_len)
    stepper = copy_step_weights(ours)
    bench_against_paddlenlp(ref, ours, stepper, inputs, args)
    bench_step_floor(ours, stepper, inputs, args)
    if not args.skip_export:
        bench_exported(ours, stepper, inputs, args)
    if not args.skip_train:
        bench_training(ref, ours, args)
    print_table()
    if args.profile:
        from paddle_unimo.generation import batch_stepper
        beam = decode_settings(args)[f"beam {args.beams}"]
        # a new stepper: the training rows changed the weights its copies were made of
        profile_decoding(batch_stepper(ours), inputs, beam, f"dynamic beam {args.beams}")
        if not args.skip_export:
            from paddle_unimo.export import InferenceStepper, export_model
            with tempfile.TemporaryDirectory() as tmp:
                for kernels, dtype in ((False, "float32"), (True, "float32"), (True, "int8"), (True, "int8_w7")):
                    folder = export_model(ours, os.path.join(tmp, f"{kernels}{dtype}"), cpu_kernels=kernels,
                                          panel_dtype=dtype)
                    label = (", CPU kernels" if kernels else "") + (f", {dtype}" if dtype != "float32" else "")
                    profile_decoding(InferenceStepper(folder), inputs, beam, f"exported beam {args.beams}{label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
