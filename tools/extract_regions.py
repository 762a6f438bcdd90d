"""Extract UNIMO image regions (bottom-up-attention style) with a PaddleDetection Faster R-CNN.

    python -m tools.extract_regions --images path/to/images --out out/regions --random-weights

``--images`` is a folder (its image files, sorted by name) or a list file (one path per line, relative paths
taken from the list's folder). Each image becomes up to ``--max-boxes`` regions in the region store ``--out``
(``paddle_unimo.data.regions.RegionStore``, keyed by the file name without folder). Results are appended every
``--flush-every`` images and when the run stops (Ctrl-C, SIGTERM), so a killed run keeps what it finished, and a
rerun skips images already in the store. Images that cannot be used are listed in ``OUT/errors.jsonl`` (path +
reason) and the run goes on; grayscale, 16-bit and RGBA images are converted, tiny images are upscaled by the
resize.
``OUT/extraction.json`` records the detector settings; a rerun with different settings is refused.

``--nproc N`` runs N worker processes, one per GPU when paddle has CUDA (``gpu:0`` .. ``gpu:N-1`` of the
visible devices), else on the CPU, where they share the cores (``OMP_NUM_THREADS``, default all cores, is
split among them). The images still missing from the store are cut into N contiguous, nearly equal chunks;
worker k writes its chunk into its own part of the store, ``OUT/worker-NN`` (a store of its own, see
``paddle_unimo.data.regions``), so no two processes write one file. The main process makes the parts' shards
live in ``OUT/index.json`` when the workers end and at the start of every run, so readers see one store and a
rerun after an interruption (with any ``--nproc``) extracts only what is missing.

Without ``--weights`` you must say ``--random-weights``: every stage runs, but the features mean nothing.
Exit status: 0, or 1 when every image tried failed or a worker process failed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import signal
import sys
import time
from typing import Optional

import paddle_unimo
from paddle_unimo.data.regions import RegionStore
from paddle_unimo.fileio import DataError, atomic_write, read_json, read_text_lines, write_json
from paddle_unimo.typed import ConfigError
# detector imports paddle inside its functions, so main's cpu_defaults() still comes first
from paddle_unimo.regions.detector import ExtractorConfig, ImageError, RegionExtractor, describe, read_image

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
RANDOM_WARNING = ("RANDOM WEIGHTS: these region features, boxes and class probabilities come from an "
                  "untrained detector and are MEANINGLESS. Use them only to test the pipeline.")
# Settings that do not change the extracted values, so a resumed run may differ in them.
_NOT_COMPARED = ("roi_batch",)
_PART = re.compile(r"^worker-(\d{2,})$")
INTERRUPTED = 130  # a worker's exit code after Ctrl-C, as a shell reports it


def parse_args(argv=None):
    d = ExtractorConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", required=True, help="image folder, or a list file with one image path per line")
    p.add_argument("--out", required=True, help="region store folder (created; resumed when it exists)")
    p.add_argument("--weights", help="PaddleDetection Faster R-CNN .pdparams (strict load)")
    p.add_argument("--random-weights", action="store_true", help="seeded random detector (tests only)")
    p.add_argument("--seed", type=int, default=0, help="seed of --random-weights")
    p.add_argument("--arch", choices=("c4", "fpn"), default=d.arch)
    p.add_argument("--depth", type=int, help="ResNet depth (default 101 for c4, 50 for fpn)")
    p.add_argument("--num-classes", type=int, default=d.num_classes, help="foreground classes of the weights")
    p.add_argument("--proposals", type=int, default=d.proposals, help="RPN boxes per image into the box head")
    p.add_argument("--conf", type=float, default=d.conf_threshold, help="keep boxes at least this confident")
    p.add_argument("--nms-iou", type=float, default=d.nms_iou)
    p.add_argument("--min-boxes", type=int, default=d.min_boxes)
    p.add_argument("--max-boxes", type=int, default=d.max_boxes)
    p.add_argument("--regress-boxes", action="store_true", help="report regressed boxes, not the proposals")
    p.add_argument("--short-side", type=int, default=d.short_side)
    p.add_argument("--max-side", type=int, default=d.max_side)
    p.add_argument("--flush-every", type=int, default=8, help="images per append to the store")
    p.add_argument("--nproc", type=int, default=1,
                   help="worker processes: one per GPU, or sharing the CPU cores (the description above says how "
                        "the work is split and merged)")
    args = p.parse_args(argv)
    if bool(args.weights) == args.random_weights:
        p.error("give exactly one of --weights FILE.pdparams or --random-weights")
    if args.nproc < 1:
        p.error(f"--nproc must be >= 1, got {args.nproc}")
    return args


def config_from_args(args) -> ExtractorConfig:
    try:
        return ExtractorConfig(arch=args.arch, depth=args.depth, num_classes=args.num_classes,
                               proposals=args.proposals, conf_threshold=args.conf, nms_iou=args.nms_iou,
                               min_boxes=args.min_boxes, max_boxes=args.max_boxes, regress_boxes=args.regress_boxes,
                               short_side=args.short_side, max_side=args.max_side)
    except ValueError as e:
        raise ConfigError(f"extraction settings: {e}") from None


def list_images(source: str):
    """[(image_id, path)] in order, and [(path, reason)] for entries that cannot get a unique id."""
    if os.path.isdir(source):
        names = sorted(n for n in os.listdir(source) if not n.startswith(".") and n.lower().endswith(IMAGE_EXTS))
        paths = [os.path.join(source, n) for n in names]
        if not paths:
            raise DataError(f"--images {source}: no image files ({', '.join(IMAGE_EXTS)}) in this folder; its "
                            "subfolders are not searched: give a list file of paths (one per line) instead")
    elif os.path.isfile(source):
        base = os.path.dirname(os.path.abspath(source))
        lines = [line.strip() for _, line in read_text_lines(source)]
        paths = [os.path.join(base, line) for line in lines if not line.startswith("#")]
        if not paths:
            raise DataError(f"--images {source}: the list file names no image")
    else:
        raise DataError(f"--images {source}: no such folder or list file")
    items, bad, seen = [], [], {}
    for path in paths:
        image_id = os.path.basename(path)
        if image_id in seen:
            bad.append((path, f"duplicate image_id {image_id!r} (also {seen[image_id]})"))
            continue
        seen[image_id] = path
        items.append((image_id, path))
    return items, bad


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_settings(out: str, settings: dict) -> None:
    """Write OUT/extraction.json, or refuse when the store was filled with other settings."""
    path = os.path.join(out, "extraction.json")
    if os.path.exists(path):
        old = read_json(path, "extraction settings")
        diff = {k: (old.get(k), v) for k, v in settings.items()
                if k not in _NOT_COMPARED and old.get(k) != v}
        if diff:
            raise ConfigError(f"{out} was extracted with other settings ({path}); use another --out. "
                              f"Differences (stored, now): {diff}")
    write_json(path, settings)


def extractor_for_store(store: str, weights: str) -> RegionExtractor:
    """A detector that extracts new images as the store ``store`` was extracted (``tasks.pipeline``'s image files):
    the settings of its ``extraction.json``, and ``weights``, the .pdparams it recorded the sha256 of, or "random"
    for a store of ``--random-weights`` (with its seed). A store without the file (converted from another
    detector's features), or other weights, is a ``DataError``: regions of another detector would not be
    comparable with the ones the model was fine-tuned on."""
    import dataclasses
    from paddle_unimo.fileio import DataError
    path = os.path.join(store, "extraction.json")
    if not os.path.isfile(path):
        raise DataError(f"{store}: no extraction.json: its regions were not extracted here (a converted store?), so "
                        "regions extracted now would not be comparable; give images of the store by name")
    settings = read_json(path, "extraction settings")
    fields = {f.name for f in dataclasses.fields(ExtractorConfig)}
    missing = sorted(fields - set(settings))
    recorded = settings_of(argparse.Namespace(random_weights=True, seed=0, weights=None), ExtractorConfig())
    unknown = sorted(set(settings) - set(recorded))
    if missing or unknown:
        raise DataError(f"{path}: written by another version (missing {missing}, unknown {unknown}): the images "
                        "cannot be extracted with its settings for certain")
    try:
        cfg = ExtractorConfig(**{k: settings[k] for k in fields})
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: {e}") from None
    if (weights == "random") != bool(settings.get("random_weights")):
        raise DataError(f"{path}: the store was extracted with "
                        + ("--random-weights: give detector='random'" if settings.get("random_weights")
                           else f"trained weights (sha256 {settings.get('weights_sha256')}): give them, not 'random'"))
    if weights == "random":
        return RegionExtractor(cfg, random_weights=True, seed=settings.get("seed") or 0)
    if not os.path.isfile(weights):
        raise DataError(f"{weights}: no such detector weights file")
    if file_sha256(weights) != settings.get("weights_sha256"):
        raise DataError(f"{weights}: not the weights {store} was extracted with (its sha256 "
                        f"{settings.get('weights_sha256')}, in {path})")
    return RegionExtractor(cfg, weights)


def part_name(rank: int) -> str:
    return f"worker-{rank:02d}"


def store_parts(out: str):
    """The worker folders of the store ``out``, in rank order."""
    if not os.path.isdir(out):
        return []
    names = [n for n in os.listdir(out) if _PART.match(n) and os.path.isdir(os.path.join(out, n))]
    return sorted(names, key=lambda n: int(_PART.match(n).group(1)))


def split(items, n: int):
    """``n`` contiguous chunks of nearly equal size, the same for the same ``items``."""
    return [items[k * len(items) // n:(k + 1) * len(items) // n] for k in range(n)]


class Run:
    """One pass over the images into the store ``folder`` (default ``--out``): extraction, batched appends,
    error log, counts."""

    def __init__(self, args, extractor: RegionExtractor, folder: Optional[str] = None):
        self.args, self.extractor = args, extractor
        folder = folder or args.out
        self.store = RegionStore(folder)
        self.pending, self.counts = [], {"done": 0, "skipped": 0, "failed": 0}
        os.makedirs(folder, exist_ok=True)
        self.errors = open(os.path.join(folder, "errors.jsonl"), "w", encoding="utf-8")  # this run's failures

    def fail(self, path: str, reason: str, log) -> None:
        self.counts["failed"] += 1
        self.errors.write(json.dumps({"image": path, "reason": reason}) + "\n")
        self.errors.flush()  # a killed run still lists what failed
        log(f"failed: {path}: {reason}")

    def flush(self) -> None:
        if self.pending:
            self.store.append(self.pending)
            self.pending = []

    def one(self, image_id: str, path: str, log) -> None:
        if image_id in self.store:
            self.counts["skipped"] += 1
            return
        try:
            image, notes = read_image(path)
            record, more = self.extractor.extract(image, image_id)
        except ImageError as err:
            return self.fail(path, str(err), log)
        except Exception as err:  # noqa: BLE001 -- one bad image must not end the run; the reason is logged
            return self.fail(path, f"{type(err).__name__}: {err}", log)
        if notes + more:
            log(f"{image_id}: {'; '.join(notes + more)}")
        self.pending.append(record)
        self.counts["done"] += 1
        if len(self.pending) >= self.args.flush_every:
            self.flush()


def settings_of(args, cfg: ExtractorConfig) -> dict:
    settings = {**describe(cfg), "random_weights": args.random_weights,
                "seed": args.seed if args.random_weights else None,
                "weights_sha256": file_sha256(args.weights) if args.weights else None}
    if args.random_weights:
        settings["warning"] = RANDOM_WARNING
    return settings


def loud_warning(message: str) -> None:
    bar = "!" * 100
    print(f"\n{bar}\n!!! {message}\n{bar}\n", file=sys.stderr, flush=True)


def timing_report(extractor: RegionExtractor) -> str:
    t = extractor.timings
    return (f"backbone+RPN {t['backbone_rpn']:.1f} s, RoI head {t['roi_head']:.1f} s ({extractor.num_rois} RoIs), "
            f"selection {t['select']:.1f} s")


def report(args, counts: dict, store: RegionStore, details: str) -> None:
    c = counts
    see = f" (see {os.path.join(args.out, 'errors.jsonl')})" if c["failed"] else ""
    print(f"extract_regions: {c['done']} done, {c['skipped']} skipped (already in the store), {c['failed']} "
          f"failed{see}; store holds {len(store)} images; {details}")


def stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def extract_here(args, cfg: ExtractorConfig, items, bad) -> dict:
    """``--nproc 1``: this process extracts every missing image into the store itself."""
    from tqdm import tqdm
    extractor = RegionExtractor(cfg, args.weights, args.random_weights, args.seed)
    check_settings(args.out, settings_of(args, cfg))
    RegionStore(args.out).add_parts(store_parts(args.out))  # finished images of an interrupted --nproc run
    run = Run(args, extractor)
    start = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)  # kill, a job scheduler: as Ctrl-C
    try:
        for path, reason in bad:
            run.fail(path, reason, tqdm.write)
        for image_id, path in tqdm(items, desc="regions", unit="img", file=sys.stderr):
            run.one(image_id, path, tqdm.write)
    finally:
        signal.signal(signal.SIGTERM, previous)
        run.flush()  # also on Ctrl-C or SIGTERM: finished images are kept
        run.errors.close()
    report(args, run.counts, run.store, f"{time.perf_counter() - start:.1f} s, {timing_report(extractor)}")
    return run.counts


def worker_devices(nproc: int):
    """``gpu:0`` .. ``gpu:N-1`` when paddle has CUDA and GPUs are visible, else ``cpu`` for every worker."""
    import paddle
    gpus = paddle.device.cuda.device_count() if paddle.device.is_compiled_with_cuda() else 0
    if gpus == 0:
        return ["cpu"] * nproc
    if nproc > gpus:
        raise ConfigError(f"--nproc {nproc}: only {gpus} GPUs are visible (CUDA_VISIBLE_DEVICES="
                         f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); run one process per GPU")
    return [f"gpu:{rank}" for rank in range(nproc)]


def _worker(args, rank: int, nproc: int, items, device: str, threads: int, parent: int) -> None:
    """Worker ``rank`` of ``--nproc``: extracts ``items`` into its part ``OUT/worker-NN``. Runs in a fresh
    (spawned) interpreter, so the thread count is set before paddle is imported."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    paddle_unimo.cpu_defaults()
    import paddle
    from tqdm import tqdm
    signal.signal(signal.SIGTERM, stop_on_sigterm)  # a worker killed on its own keeps what it finished
    name = f"worker {rank}/{nproc}"
    try:
        paddle.set_device(device)
        extractor = RegionExtractor(config_from_args(args), args.weights, args.random_weights, args.seed)
        run = Run(args, extractor, os.path.join(args.out, part_name(rank)))
        try:
            for image_id, path in tqdm(items, desc=f"regions {rank}", unit="img", file=sys.stderr, position=rank):
                if os.getppid() != parent:  # the main process was killed: nobody would merge what follows
                    tqdm.write(f"{name}: the main process is gone, stopping (finished images are kept)")
                    break
                run.one(image_id, path, lambda message: tqdm.write(f"{name}: {message}"))
        finally:
            run.flush()
            run.errors.close()
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    c = run.counts
    print(f"extract_regions {name} on {device}: {c['done']} done, {c['failed']} failed; {timing_report(extractor)}",
          flush=True)


def gather_errors(args, bad, parts) -> int:
    """Writes this run's failures, the main process's and every worker's, to OUT/errors.jsonl; their count."""
    lines = [json.dumps({"image": path, "reason": reason}) + "\n" for path, reason in bad]
    for part in parts:
        path = os.path.join(args.out, part, "errors.jsonl")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                lines.extend(line if line.endswith("\n") else line + "\n" for line in f if line.strip())
    atomic_write(os.path.join(args.out, "errors.jsonl"), "".join(lines))
    return len(lines)


def worker_threads(nproc: int) -> int:
    """Threads per worker: ``OMP_NUM_THREADS`` (default all cores) shared among the ``nproc`` processes."""
    budget = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, (int(budget) if budget.isdigit() else paddle_unimo.cpu_count()) // max(1, nproc))


def start_errors(args, bad) -> None:
    """Drops the workers' failure lists of the previous run and lists the main process's failures now."""
    for part in store_parts(args.out):
        if os.path.exists(os.path.join(args.out, part, "errors.jsonl")):
            os.remove(os.path.join(args.out, part, "errors.jsonl"))
    gather_errors(args, bad, [])
    for path, reason in bad:
        print(f"failed: {path}: {reason}", file=sys.stderr)


def run_workers(args, chunks, devices, threads: int, procs: list) -> None:
    """Starts one spawned worker per chunk (appended to ``procs`` as it starts) and waits for them."""
    if devices[0] == "cpu" and len(chunks) > 1:
        print(f"extract_regions: {len(chunks)} worker processes on the CPU share its {paddle_unimo.cpu_count()} "
              f"cores ({threads} thread{'s' if threads > 1 else ''} each), so expect about the speed of one "
              "process; --nproc is meant for one process per GPU", file=sys.stderr, flush=True)
    elif chunks:
        print(f"extract_regions: {len(chunks)} worker processes on {', '.join(devices[:len(chunks)])}",
              file=sys.stderr, flush=True)
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked paddle state
    for rank, chunk in enumerate(chunks):
        procs.append(ctx.Process(target=_worker, name=f"extract_regions-{rank}",
                                 args=(args, rank, len(chunks), chunk, devices[rank], threads, os.getpid())))
        procs[-1].start()
    for proc in procs:
        proc.join()


def extract_in_workers(args, cfg: ExtractorConfig, items, bad) -> dict:
    """``--nproc N``: the missing images in N chunks, one worker process each; see the module docstring."""
    devices = worker_devices(args.nproc)
    settings_path = os.path.join(args.out, "extraction.json")
    new_store = not os.path.exists(settings_path)
    check_settings(args.out, settings_of(args, cfg))  # before the workers, which must not race to write it
    store = RegionStore(args.out)
    store.add_parts(store_parts(args.out))  # an interrupted run's finished images count as done
    todo = [(image_id, path) for image_id, path in items if image_id not in store]
    nproc = min(args.nproc, len(todo))
    start_errors(args, bad)
    start, procs = time.perf_counter(), []

    def stop_workers(signum, frame):  # SIGTERM to this process alone (kill, a scheduler): the workers too
        for proc in procs:
            proc.terminate()
        raise KeyboardInterrupt("SIGTERM")
    previous = signal.signal(signal.SIGTERM, stop_workers)
    try:
        run_workers(args, split(todo, nproc) if nproc else [], devices, worker_threads(nproc), procs)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc in procs:  # after Ctrl-C or SIGTERM the workers still write their finished images
            proc.join()
        counts = {"done": store.add_parts(store_parts(args.out)), "skipped": len(items) - len(todo),
                  "failed": gather_errors(args, bad, [part_name(rank) for rank in range(nproc)])}
        if new_store and not len(store):  # e.g. no worker could load the weights: do not pin the settings
            os.remove(settings_path)
    report(args, counts, store, f"{time.perf_counter() - start:.1f} s with {nproc} worker processes")
    broken = [(rank, proc.exitcode) for rank, proc in enumerate(procs) if proc.exitcode != 0]
    if broken:
        print(f"extract_regions: worker processes ended early (rank, exit code): {broken}; their finished images "
              "are kept, a rerun extracts the missing ones", file=sys.stderr)
        counts["worker_failed"] = len(broken)
    return counts


def main(argv=None) -> int:
    """The exit status: 0, 1 when no image could be extracted or a worker failed, 2 (one ``error:`` line) for a
    user's error, 130 after Ctrl-C."""
    paddle_unimo.cpu_defaults()
    from tasks.cli import run_tool
    return run_tool(extract, argv, status=True)


def extract(argv) -> int:
    args = parse_args(argv)
    if args.random_weights:
        loud_warning(RANDOM_WARNING)
    items, bad = list_images(args.images)
    cfg = config_from_args(args)
    try:
        counts = (extract_here if args.nproc == 1 else extract_in_workers)(args, cfg, items, bad)
    except KeyboardInterrupt:
        print("extract_regions: interrupted; the finished images are kept, the same command continues",
              file=sys.stderr)
        return 130
    if args.random_weights:
        loud_warning(RANDOM_WARNING)
    c = counts
    return 1 if c.get("worker_failed") or (c["failed"] and not c["done"] and not c["skipped"]) else 0


if __name__ == "__main__":
    sys.exit(main())
