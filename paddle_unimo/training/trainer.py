"""The one training loop, shared by every fine-tuning task and by pretraining.

It owns: AdamW with linear warmup and decay (weight decay off for biases and norms), gradient clipping and
accumulation, mixed precision (fp16/bf16 with dynamic loss scaling on GPU; reported inactive on CPU),
evaluation every N steps keeping the best checkpoint, exact resume, data parallelism through fleet when
launched with several processes, VisualDL scalars and a progress bar.

What a task gives it: the examples, ``make_batch(items) -> dict of numpy arrays``, ``loss_fn(model, batch)
-> dict`` with a ``"loss"`` tensor (a mean over the batch's items, e.g. target tokens), ``count(batch) -> int``
(how many items that mean is over) and optionally ``evaluate(model) -> dict`` of metrics.

The loss of an optimizer step is the mean over every item of the step: across its ``accumulate``
micro-batches and across processes. So N processes with batch B train exactly like one process with
batch N * B (the global item count is summed over ranks before the backward passes).

Exact resume: the data order of epoch e is a permutation seeded by ``seed + e``; dropout is reseeded from
``seed`` and the micro-batch index before every forward; the checkpoint holds the model, the optimizer
(with its scheduler) and the micro-batch position. A resumed run therefore takes the same batches with the
same dropout masks as an uninterrupted one. Checkpoints are written to a temporary folder then renamed.

A checkpoint records the run's *fingerprint* (given by the caller: hashes of the data files, the model it
started from, the settings that change the run). Resuming into a folder whose checkpoint has another
fingerprint stops before the checkpoint is loaded or anything is written (``ResumeMismatch``), and loading
is strict: a missing, unexpected or mis-shaped model tensor, and an unexpected or mis-shaped optimizer
tensor, is an error (a parameter that was never updated has no moments yet, and gets the fresh ones of its
first update after the resume, as in an uninterrupted run). The losses of the current logging window are part
of the state, so a resumed run logs the same loss curve. Ctrl-C (or SIGTERM) finishes the current step, saves a
checkpoint and raises ``Interrupted``.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle
import paddle.distributed as dist

from ..checkpoint import WEIGHTS_NAME, load_state, read_paddle_file, set_state
from ..fileio import DataError, atomic_dir, finite_or_none, read_json, recover_dir, write_json
from ..typed import ConfigError, bounded, from_dict

logger = logging.getLogger(__name__)
CHECKPOINT = "checkpoint"
BEST = "best"


@dataclass
class TrainConfig:
    epochs: int = bounded(3, min=1)
    max_steps: int = bounded(-1, min=-1)  # optimizer steps; -1: epochs decide
    batch_size: int = bounded(16, min=1)  # per process and micro-batch
    lr: float = bounded(5e-5, min=0.0)
    warmup: float = bounded(0.02, min=0.0)  # a fraction of all steps (< 1) or a number of steps
    # after the warmup the lr decays linearly to 0; with epochs listed here it stays constant instead and is
    # multiplied by lr_decay_rate at the start of each (the original retrieval recipe: [24, 32], 0.1)
    lr_decay_epochs: List[int] = field(default_factory=list)
    lr_decay_rate: float = bounded(0.1, above=0.0, max=1.0)
    weight_decay: float = bounded(0.01, min=0.0)
    beta1: float = bounded(0.9, min=0.0, max=1.0)
    beta2: float = bounded(0.98, min=0.0, max=1.0)
    eps: float = bounded(1e-6, above=0.0)
    grad_clip: float = bounded(1.0, min=0.0)  # 0: no clipping
    label_smoothing: float = bounded(0.1, min=0.0, max=1.0)
    accumulate: int = bounded(1, min=1)
    amp: bool = False
    amp_level: str = bounded("O1", choices=("O1", "O2"))
    amp_dtype: str = bounded("float16", choices=("float16", "bfloat16"))
    init_loss_scaling: float = bounded(32768.0, above=0.0)
    eval_steps: int = bounded(0, min=0)  # 0: evaluate at the end of every epoch
    save_steps: int = bounded(0, min=0)  # 0: save at every evaluation
    logging_steps: int = bounded(10, min=1)
    seed: int = 42
    progress: bool = True
    recompute: bool = False  # recompute each encoder layer in the backward pass: less memory, more time

    # keys that change neither the trained parameters nor the data order: a run may resume with other values
    RESUMABLE_CHANGES = ("eval_steps", "save_steps", "logging_steps", "progress")

    def validate(self, where: str) -> None:
        if self.max_steps == 0:
            raise ConfigError(f"{where}.max_steps: 0 trains nothing (allowed: -1 for 'epochs decide', or >= 1)")
        epochs = self.lr_decay_epochs
        if any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in epochs) or sorted(set(epochs)) != epochs:
            raise ConfigError(f"{where}.lr_decay_epochs: {epochs}: expected increasing epoch numbers >= 1")

    @classmethod
    def from_dict(cls, values: dict, where: str = "train") -> "TrainConfig":
        return from_dict(cls, values, where)


def linear_warmup_decay(total_steps: int, warmup: float, boundaries: Sequence[int] = (), rate: float = 0.1):
    """The lr factor of a step: a linear warmup, then a linear decay to 0 at ``total_steps`` -- or, with
    ``boundaries`` (steps), constant and multiplied by ``rate`` at each boundary passed."""
    warmup_steps = int(warmup * total_steps) if warmup < 1 else int(warmup)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        if boundaries:
            return rate ** sum(step >= b for b in boundaries)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def amp_active(cfg: TrainConfig) -> bool:
    """fp16/bf16 autocast needs a GPU: on CPU it would change nothing, so it is reported and skipped."""
    if not cfg.amp:
        return False
    if paddle.is_compiled_with_cuda() and paddle.device.get_device().startswith("gpu"):
        return True
    logger.warning("mixed precision (%s %s) requested but inactive: no %s kernels on %s; training in fp32",
                   cfg.amp_level, cfg.amp_dtype, cfg.amp_dtype, paddle.device.get_device())
    return False


class ResumeMismatch(DataError):
    """An output folder's checkpoint was written by a different run (other data, model or settings)."""


def empty_window() -> dict:
    """The losses (all, and per objective) of the steps since the last logged one."""
    return {"losses": [], "objectives": {}}


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training: the run stopped after a completed step, with a checkpoint of it."""

    def __init__(self, step: int):
        super().__init__(f"interrupted at step {step}; run the same command to resume")
        self.step = step


def fingerprint_differences(old: dict, new: dict) -> list:
    """``key: old -> new`` for every entry of two run fingerprints (flat dicts of JSON values) that differs."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '(none)')} -> {new.get(k, '(none)')}" for k in keys if old.get(k) != new.get(k)]


class Trainer:
    def __init__(self, model, cfg: TrainConfig, examples: Sequence, make_batch: Callable[[list], dict],
                 loss_fn: Callable, out_dir: str, evaluate: Optional[Callable] = None, metric: str = "loss",
                 greater_is_better: bool = False, save_extra: Optional[Callable[[str], None]] = None,
                 count: Callable[[dict], int] = lambda batch: 1, sampler: Optional[Callable[[int], object]] = None,
                 find_unused_parameters: bool = False, tensor_inputs: bool = True, fingerprint: Optional[dict] = None,
                 kind: Optional[Callable[[dict], str]] = None, unit: str = "tok"):
        # what the run came from; a resume must match it (as trainer_state.json holds it: inf, nan as null)
        self.fingerprint = finite_or_none(dict(fingerprint or {}))
        self.cfg, self.examples, self.make_batch, self.loss_fn = cfg, list(examples), make_batch, loss_fn
        self.count, self.sampler = count, sampler
        self.unit = unit  # what ``count`` counts, for the log's rate: "tok" (target tokens), "ex" (examples), ...
        self.kind = kind  # a micro-batch's loss kind (pretraining: its objective), see accumulate_gradients
        self.tensor_inputs = tensor_inputs  # False: loss_fn gets the numpy batch (objectives convert it themselves)
        self.out_dir, self.evaluate, self.metric, self.greater = out_dir, evaluate, metric, greater_is_better
        self.save_extra = save_extra
        self.world, self.rank = dist.get_world_size(), dist.get_rank()
        self.model = model
        self.global_batch = cfg.batch_size * self.world
        if sampler is not None:  # the caller draws every micro-batch itself (pretraining's corpus mixture)
            if cfg.max_steps <= 0:
                raise ValueError("a trainer with a sampler needs train.max_steps")
            self.per_epoch = cfg.max_steps * cfg.accumulate
        else:
            # a last, partial global batch is kept when every process gets at least one example of it
            full, rest = divmod(len(self.examples), self.global_batch)
            self.per_epoch = full + (rest >= self.world)
            if not self.per_epoch:
                raise ValueError(f"{len(self.examples)} examples are fewer than the {self.world} processes")
        micro_total = self.per_epoch * cfg.epochs
        self.total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(micro_total / cfg.accumulate)
        boundaries = [-(-e * self.per_epoch // cfg.accumulate) for e in cfg.lr_decay_epochs]  # epochs' first steps
        late = [e for e, b in zip(cfg.lr_decay_epochs, boundaries) if b >= self.total_steps]
        if late:
            raise ConfigError(f"train.lr_decay_epochs: epoch {late[0]} starts at or after the run's last step "
                              f"({self.total_steps} steps of {cfg.accumulate} micro-batches, {self.per_epoch} "
                              "micro-batches an epoch): the lr would never step down there")
        self.scheduler = paddle.optimizer.lr.LambdaDecay(cfg.lr, linear_warmup_decay(
            self.total_steps, cfg.warmup, boundaries, cfg.lr_decay_rate))
        decay = {p.name for n, p in model.named_parameters() if "bias" not in n and "norm" not in n}
        self.optimizer = paddle.optimizer.AdamW(
            learning_rate=self.scheduler, beta1=cfg.beta1, beta2=cfg.beta2, epsilon=cfg.eps,
            parameters=model.parameters(), weight_decay=cfg.weight_decay,
            apply_decay_param_fun=lambda name: name in decay,
            grad_clip=paddle.nn.ClipGradByGlobalNorm(cfg.grad_clip) if cfg.grad_clip > 0 else None)
        self.amp = amp_active(cfg)
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=cfg.init_loss_scaling) if self.amp else None
        if self.amp and cfg.amp_level == "O2":
            self.model, self.optimizer = paddle.amp.decorate(self.model, self.optimizer, level="O2",
                                                             dtype=cfg.amp_dtype)
        self.model.set_recompute(cfg.recompute)
        self.train_model = self.model
        if self.world > 1:
            from paddle.distributed import fleet
            strategy = fleet.DistributedStrategy()
            strategy.find_unused_parameters = find_unused_parameters  # objectives that use part of the model
            fleet.init(is_collective=True, strategy=strategy)
            self.train_model = fleet.distributed_model(self.model)
            self.optimizer = fleet.distributed_optimizer(self.optimizer)
        self.state = {"micro": 0, "step": 0, "best": None, "history": [], "nonfinite_skipped": 0,
                      "window": empty_window()}
        self.writer = None

    # ---- data order ---------------------------------------------------------------------------------
    def micro_batch(self, micro: int) -> list:
        """Examples of micro-batch ``micro`` for this rank: a slice of the epoch's seeded permutation."""
        if self.sampler is not None:
            return self.sampler(micro)
        epoch, index = divmod(micro, self.per_epoch)
        order = np.random.default_rng(self.cfg.seed + epoch).permutation(len(self.examples))
        chunk = order[index * self.global_batch:(index + 1) * self.global_batch]
        return [self.examples[i] for i in chunk[self.rank::self.world]]

    # ---- checkpoints --------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if self.rank != 0:
            return
        with atomic_dir(os.path.join(self.out_dir, CHECKPOINT)) as tmp:
            paddle.save(self.model.state_dict(), os.path.join(tmp, WEIGHTS_NAME))
            paddle.save(self.optimizer_state(), os.path.join(tmp, "optimizer.pdopt"))
            write_json(os.path.join(tmp, "trainer_state.json"), {**self.state, "fingerprint": self.fingerprint})

    def _renames(self, to_structured: bool):
        """Optimizer accumulators are keyed by parameter names (``linear_3.w_0_moment1_0``) that depend on
        how many layers the process built before; checkpoints key them by structured names instead."""
        pairs = [(p.name + "_", n + "_") for n, p in self.model.named_parameters()]
        return pairs if to_structured else [(b, a) for a, b in pairs]

    def _rename(self, state: dict, to_structured: bool) -> dict:
        renames = self._renames(to_structured)
        out = {}
        for key, value in state.items():
            for old, new in renames:
                if key.startswith(old):
                    key = new + key[len(old):]
                    break
            out[key] = self._rename(value, to_structured) if isinstance(value, dict) else value  # master_weights
        return out

    def optimizer_state(self) -> dict:
        return self._rename(self.optimizer.state_dict(), to_structured=True)

    def load_optimizer_state(self, state: dict, source: str) -> None:
        """Strict: every saved accumulator must belong to a parameter of this model, with its shape."""
        shapes = {n: list(p.shape) for n, p in self.model.named_parameters()}
        problems = []
        for key, value in state.items():
            if key in ("LR_Scheduler", "master_weights") or not hasattr(value, "shape"):
                continue
            owner = max((n for n in shapes if key.startswith(n + "_")), key=len, default=None)
            if owner is None:
                problems.append(f"unexpected {key}")
            elif "moment" in key and list(value.shape) != shapes[owner]:
                problems.append(f"{key}: checkpoint {list(value.shape)} vs parameter {shapes[owner]}")
        if problems:
            raise DataError(f"{source}: optimizer state does not match the model: " + "; ".join(problems[:10]) +
                            (f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""))
        self.optimizer.set_state_dict(self._rename(self.with_fresh_moments(state), to_structured=False))

    def with_fresh_moments(self, state: dict) -> dict:
        """``state`` plus, for each trainable parameter it has no moments of (not updated before the checkpoint: an
        objective's head not drawn yet), the accumulators its first update creates -- zero moments, beta powers at
        beta1 / beta2. Paddle's optimizer, once given a state, refuses to create any the state lacks."""
        params = dict(self.model.named_parameters())
        template = next((n for n in params if f"{n}_moment1_0" in state), None)
        if template is None:
            return state
        suffixes = [k[len(template) + 1:] for k in state if k.startswith(template + "_") and hasattr(state[k], "shape")]
        fresh = {}
        for name, param in params.items():
            if param.stop_gradient or f"{name}_moment1_0" in state:
                continue
            for suffix in suffixes:
                like = state[f"{template}_{suffix}"]
                beta = self.cfg.beta1 if "beta1_pow" in suffix else self.cfg.beta2 if "beta2_pow" in suffix else None
                fresh[f"{name}_{suffix}"] = paddle.zeros(param.shape, like.dtype) if beta is None else \
                    paddle.full(like.shape, beta, like.dtype)
        return {**state, **fresh}

    def check_resumable(self) -> Optional[Tuple[str, dict]]:
        """The checkpoint folder to resume from and its trainer state (fingerprint removed), or None. Reads only
        ``trainer_state.json``: a state of another run (``ResumeMismatch``) or a malformed one stops the run
        before anything is loaded or written."""
        path = recover_dir(os.path.join(self.out_dir, CHECKPOINT))
        state_file = os.path.join(path, "trainer_state.json")
        if not os.path.isfile(state_file):
            return None
        state = read_json(state_file, "trainer state")
        if not isinstance(state, dict) or not isinstance(state.get("fingerprint", {}), dict):
            raise DataError(f"{state_file}: not a trainer state (expected a JSON object with a fingerprint)")
        old = state.pop("fingerprint", {})
        differences = fingerprint_differences(old, self.fingerprint)
        if differences:
            newer = sorted(set(self.fingerprint) - set(old))
            why = f"; settings this checkpoint predates, from a later paddle_unimo: {', '.join(newer)}" if newer else ""
            raise ResumeMismatch(
                f"{path}: the checkpoint in this folder comes from a different run ({'; '.join(differences)}){why}; "
                f"run with --no-resume (make: NO_RESUME=1) to start over here, or choose another output folder")
        state.setdefault("window", empty_window())  # a checkpoint written before the window was kept
        missing = sorted(set(self.state) - set(state))
        if missing:
            raise DataError(f"{state_file}: missing keys {missing}")
        return path, state

    def resume(self) -> bool:
        found = self.check_resumable()
        if found is None:
            return False
        path, state = found
        set_state(self.model, load_state(path), os.path.join(path, WEIGHTS_NAME))
        optimizer_file = os.path.join(path, "optimizer.pdopt")
        self.load_optimizer_state(read_paddle_file(optimizer_file), optimizer_file)
        self.state = state
        logger.info("resumed from %s at step %d", path, self.state["step"])
        return True

    def save_model(self, name: str) -> None:
        """A loadable model folder (``from_pretrained``), with the tokenizer via ``save_extra``."""
        if self.rank != 0:
            return
        with atomic_dir(os.path.join(self.out_dir, name)) as tmp:
            self.model.save_pretrained(tmp)
            if self.save_extra:
                self.save_extra(tmp)

    def save_best(self, metrics: Dict[str, float]) -> None:
        """Keeps the model as ``best/`` when its metric beats the best so far. An undefined metric (None or NaN:
        e.g. the correlation of a regressor that predicts a constant) is never a best; it is kept only while the
        run has no model at all, so that a run always ends with one."""
        value = metrics[self.metric]
        best = self.state["best"]
        if value is None or math.isnan(value):
            logger.warning("%s is undefined at step %d (%s): not a best checkpoint", self.metric, self.state["step"],
                           value)
            if best is None and not os.path.isdir(os.path.join(self.out_dir, BEST)):
                self.save_model(BEST)
            return
        if best is not None and (value <= best if self.greater else value >= best):
            return
        self.state["best"] = value
        self.save_model(BEST)
        logger.info("new best %s %.4f at step %d", self.metric, value, self.state["step"])

    # ---- the loop -----------------------------------------------------------------------------------
    def run_evaluation(self) -> Optional[dict]:
        if self.evaluate is None:
            return None
        metrics = self.evaluate(self.model) if self.rank == 0 else None
        self.model.train()
        if metrics is not None:
            self.state["history"].append({"step": self.state["step"], **metrics})
            self.log_scalars({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
            self.save_best(metrics)
        if self.world > 1:
            dist.barrier()
        return metrics

    def log_scalars(self, values: Dict[str, float]) -> None:
        if self.rank != 0:
            return
        if self.writer is None:
            from visualdl import LogWriter
            self.writer = LogWriter(logdir=os.path.join(self.out_dir, "vdl"))
        for key, value in values.items():
            self.writer.add_scalar(key, float(value), self.state["step"])

    def accumulate_gradients(self):
        """Forward/backward of the step's micro-batches; returns (the step's loss over all processes, this
        process's item count, each kind's mean loss over all processes when there are kinds). A micro-batch's
        loss is weighted by its share of the items of its kind (over all processes), times its kind's share of
        the step's micro-batches: with one kind (fine-tuning) the step is exactly the mean over the whole batch;
        pretraining's objectives (``kind``) weigh by how often the step drew them, each by its own mean loss, not
        by how many items (tokens, regions, pairs) each counts. Every process must draw the same kind at each
        micro-batch (``pretraining.Mixture`` seeds the draw by the micro-batch alone)."""
        micros = range(self.state["micro"], self.state["micro"] + self.cfg.accumulate)
        batches = [self.make_batch(self.micro_batch(m)) for m in micros]
        counts = [self.count(b) for b in batches]
        kinds = [self.kind(b) if self.kind else None for b in batches]
        totals = paddle.to_tensor(np.asarray(counts, np.float64))
        if self.world > 1:
            dist.all_reduce(totals)  # data parallelism averages gradients over ranks: undo that, then divide
        per_kind = {}
        for k, n in zip(kinds, totals.numpy().tolist()):
            per_kind[k] = per_kind.get(k, 0.0) + n
        share = {k: kinds.count(k) / len(kinds) for k in per_kind}
        sums = dict.fromkeys(per_kind, 0.0)  # per kind: this process's loss x items
        # recompute runs a layer's forward again inside backward, which DataParallel's gradient hooks take for a
        # second use of its parameters ("has been ready before"): then the gradients are averaged by hand
        by_hand = self.world > 1 and self.cfg.recompute
        with self.train_model.no_sync() if by_hand else contextlib.nullcontext():
            for micro, batch, count, k in zip(micros, batches, counts, kinds):
                paddle.seed(self.cfg.seed * 1_000_003 + micro)  # dropout depends only on the position: exact resume
                autocast = paddle.amp.auto_cast(level=self.cfg.amp_level, dtype=self.cfg.amp_dtype) if self.amp \
                    else contextlib.nullcontext()
                with autocast:
                    if self.tensor_inputs:
                        batch = {k: paddle.to_tensor(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}
                    out = self.loss_fn(self.train_model, batch)
                loss = out["loss"] * (count * share[k] / max(per_kind[k], 1.0) * self.world)
                (self.scaler.scale(loss) if self.scaler else loss).backward()
                sums[k] += float(out["loss"]) * count
        if by_hand:  # the mean over processes, as DataParallel's
            from paddle.distributed.fleet.utils.hybrid_parallel_util import fused_allreduce_gradients
            fused_allreduce_gradients(list(self.model.parameters()), None)
        self.state["micro"] = micros[-1] + 1
        totals = np.asarray(list(sums.values()), np.float64)
        if self.world > 1:  # over every process's items, as one process on the whole batch logs them
            totals = paddle.to_tensor(totals)
            dist.all_reduce(totals)
            totals = totals.numpy()
        means = {k: float(v) / max(per_kind[k], 1.0) for k, v in zip(sums, totals)}
        return sum(share[k] * means[k] for k in means), sum(counts), means if self.kind else {}

    def gradients_finite(self) -> bool:
        """With data parallelism the gradients are already averaged, so every rank decides alike."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        return bool(paddle.stack([paddle.isfinite(g).all() for g in grads]).all()) if grads else True

    def optimizer_step(self, loss: float) -> None:
        if not self.scaler and not (math.isfinite(loss) and self.gradients_finite()):
            # a non-finite loss or gradient: skip the update (data and schedule still advance) and count it
            self.state["nonfinite_skipped"] += 1
            logger.warning("step %d: non-finite loss or gradient, update skipped (%d so far)",
                           self.state["step"] + 1, self.state["nonfinite_skipped"])
            self.optimizer.clear_grad(set_to_zero=False)
            self.scheduler.step()
            self.state["step"] += 1
            return
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        # None, not zeros: a parameter unused by a step (another objective's) gets no momentum update, as after
        # a resume, where it has no gradient yet
        self.optimizer.clear_grad(set_to_zero=False)
        self.scheduler.step()
        self.state["step"] += 1

    @contextlib.contextmanager
    def interruptible(self):
        """The first Ctrl-C (SIGINT, or SIGTERM as job schedulers send) lets the current step finish, saves a
        checkpoint and raises ``Interrupted``; a second one stops at once. Only in a single process's main
        thread (launched runs keep the launcher's handling)."""
        import threading
        self.interrupted = False
        if self.world > 1 or threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True
            logger.warning("%s: stopping after this step with a checkpoint (again to stop at once)",
                           "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name)
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, action in previous.items():
                signal.signal(s, action)

    def log_window(self, step: int, tokens: int, seconds: float, bar) -> None:
        """The logging window's mean loss (and per objective), learning rate and speed: log, VisualDL, bar. The
        window is part of the trainer state, so a window a resume falls in averages the same steps."""
        losses, objectives = self.state["window"]["losses"], self.state["window"]["objectives"]
        mean_loss = float(np.mean(losses))
        rate = tokens / max(seconds, 1e-9)
        lr = self.optimizer.get_lr()
        self.state["history"].append({"step": step, "loss": mean_loss, "lr": lr})
        self.log_scalars({"train/loss": mean_loss, "train/lr": lr,
                          f"train/{'tokens' if self.unit == 'tok' else self.unit}_per_s": rate,
                          **{f"train/{n}_loss": float(np.mean(v)) for n, v in objectives.items()}})
        self.state.setdefault("objective_losses", []).extend(
            [step, n, float(np.mean(v))] for n, v in sorted(objectives.items()))
        logger.info("step %d/%d loss %.4f lr %.3g %.0f %s/s", step, self.total_steps, mean_loss, lr, rate, self.unit)
        if bar:
            bar.set_postfix({"loss": f"{mean_loss:.4f}", "lr": f"{lr:.2e}", f"{self.unit}/s": f"{rate:.0f}"})

    def evaluate_and_save(self, step: int) -> None:
        cfg = self.cfg
        epoch_end = self.state["micro"] // self.per_epoch > (self.state["micro"] - cfg.accumulate) // self.per_epoch
        last = step == self.total_steps
        if (cfg.eval_steps and step % cfg.eval_steps == 0) or (not cfg.eval_steps and epoch_end) or last:
            self.run_evaluation()
        if (cfg.save_steps and step % cfg.save_steps == 0) or (not cfg.save_steps and (
                (cfg.eval_steps and step % cfg.eval_steps == 0) or epoch_end)) or last or self.interrupted:
            self.save_checkpoint()

    def train(self, resume: bool = True, stop_after: int = -1) -> dict:
        """Trains to the end (or, for tests of resuming, returns after ``stop_after`` optimizer steps)."""
        if resume:
            self.resume()
        self.started_at = self.state["step"]  # a finished run resumed trains nothing: started_at == step
        self.model.train()
        bar = None
        if self.cfg.progress and self.rank == 0:
            from tqdm import tqdm
            bar = tqdm(total=self.total_steps, initial=self.state["step"], desc="train", dynamic_ncols=True,
                       mininterval=1.0, disable=None)  # disable=None: no bar when stderr is not a terminal
        tokens, started = 0, time.perf_counter()  # the speed: of this process's steps only
        if bar:  # log lines above the bar, not appended to it
            from tqdm.contrib.logging import logging_redirect_tqdm
            above_bar = logging_redirect_tqdm()
        else:
            above_bar = contextlib.nullcontext()
        with self.interruptible(), above_bar:
            while self.state["step"] < self.total_steps:
                loss, count, kind_losses = self.accumulate_gradients()
                window = self.state["window"]
                window["losses"].append(loss)
                tokens += count
                self.optimizer_step(loss)
                step = self.state["step"]
                for name, value in kind_losses.items():  # one curve per objective, averaged per logging window
                    window["objectives"].setdefault(name, []).append(value)
                if step % self.cfg.logging_steps == 0 or step == self.total_steps:
                    self.log_window(step, tokens, time.perf_counter() - started, bar)
                    self.state["window"], tokens, started = empty_window(), 0, time.perf_counter()
                if bar:
                    bar.update(1)
                self.evaluate_and_save(step)
                if self.interrupted:
                    raise Interrupted(step)
                if step == stop_after:
                    break
        if bar:
            bar.close()
        if self.evaluate is None and self.state["step"] == self.total_steps:
            self.save_model(BEST)  # nothing to compare: the final model is the one to keep
        if self.writer:
            self.writer.close()
        return self.state
