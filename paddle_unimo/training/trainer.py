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
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import paddle
import paddle.distributed as dist

from ..modeling import Encoder

logger = logging.getLogger(__name__)
CHECKPOINT = "checkpoint"
BEST = "best"


@dataclass
class TrainConfig:
    epochs: int = 3
    max_steps: int = -1  # optimizer steps; -1: epochs decide
    batch_size: int = 16  # per process and micro-batch
    lr: float = 5e-5
    warmup: float = 0.02  # a fraction of all steps (< 1) or a number of steps
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip: float = 1.0
    label_smoothing: float = 0.1
    accumulate: int = 1
    amp: bool = False
    amp_level: str = "O1"
    amp_dtype: str = "float16"
    init_loss_scaling: float = 32768.0
    eval_steps: int = 0  # 0: evaluate at the end of every epoch
    save_steps: int = 0  # 0: save at every evaluation
    logging_steps: int = 10
    seed: int = 42
    progress: bool = True
    recompute: bool = False  # recompute each encoder layer in the backward pass: less memory, more time

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise KeyError(f"unknown train keys {unknown}; known: {sorted(known)}")
        return cls(**values)


def linear_warmup_decay(total_steps: int, warmup: float):
    warmup_steps = int(warmup * total_steps) if warmup < 1 else int(warmup)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
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


def save_dir_atomically(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` fills a temporary folder that then replaces ``path``; a crash leaves the old one."""
    tmp, old = path + ".tmp", path + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    write(tmp)
    if os.path.exists(path):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


class Trainer:
    def __init__(self, model, cfg: TrainConfig, examples: Sequence, make_batch: Callable[[list], dict],
                 loss_fn: Callable, out_dir: str, evaluate: Optional[Callable] = None, metric: str = "loss",
                 greater_is_better: bool = False, save_extra: Optional[Callable[[str], None]] = None,
                 count: Callable[[dict], int] = lambda batch: 1, sampler: Optional[Callable[[int], object]] = None,
                 find_unused_parameters: bool = False, tensor_inputs: bool = True):
        self.cfg, self.examples, self.make_batch, self.loss_fn = cfg, list(examples), make_batch, loss_fn
        self.count, self.sampler = count, sampler
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
        self.scheduler = paddle.optimizer.lr.LambdaDecay(cfg.lr, linear_warmup_decay(self.total_steps, cfg.warmup))
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
        for layer in self.model.sublayers(include_self=True):
            if isinstance(layer, Encoder):
                layer.recompute = cfg.recompute
        self.train_model = self.model
        if self.world > 1:
            from paddle.distributed import fleet
            strategy = fleet.DistributedStrategy()
            strategy.find_unused_parameters = find_unused_parameters  # objectives that use part of the model
            fleet.init(is_collective=True, strategy=strategy)
            self.train_model = fleet.distributed_model(self.model)
            self.optimizer = fleet.distributed_optimizer(self.optimizer)
        self.state = {"micro": 0, "step": 0, "best": None, "history": [], "nonfinite_skipped": 0}
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

        def write(tmp):
            paddle.save(self.model.state_dict(), os.path.join(tmp, "model_state.pdparams"))
            paddle.save(self.optimizer_state(), os.path.join(tmp, "optimizer.pdopt"))
            with open(os.path.join(tmp, "trainer_state.json"), "w", encoding="utf-8") as f:
                json.dump(self.state, f, indent=1)
        save_dir_atomically(os.path.join(self.out_dir, CHECKPOINT), write)

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

    def load_optimizer_state(self, state: dict) -> None:
        self.optimizer.set_state_dict(self._rename(state, to_structured=False))

    def resume(self) -> bool:
        path = os.path.join(self.out_dir, CHECKPOINT)
        if not os.path.isdir(path) and os.path.isdir(path + ".old"):
            path += ".old"  # a crash between the two renames of save_dir_atomically
        if not os.path.isfile(os.path.join(path, "trainer_state.json")):
            return False
        self.model.set_state_dict(paddle.load(os.path.join(path, "model_state.pdparams")))
        self.load_optimizer_state(paddle.load(os.path.join(path, "optimizer.pdopt")))
        with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as f:
            self.state = json.load(f)
        logger.info("resumed from %s at step %d", path, self.state["step"])
        return True

    def save_model(self, name: str) -> None:
        """A loadable model folder (``from_pretrained``), with the tokenizer via ``save_extra``."""
        if self.rank != 0:
            return

        def write(tmp):
            self.model.save_pretrained(tmp)
            if self.save_extra:
                self.save_extra(tmp)
        save_dir_atomically(os.path.join(self.out_dir, name), write)

    def save_best(self, metrics: Dict[str, float]) -> None:
        value = metrics[self.metric]
        best = self.state["best"]
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
        """Forward/backward of the step's micro-batches, each weighted by its share of the step's items
        over all processes; returns (local mean loss, local item count)."""
        micros = range(self.state["micro"], self.state["micro"] + self.cfg.accumulate)
        batches = [self.make_batch(self.micro_batch(m)) for m in micros]
        counts = [self.count(b) for b in batches]
        total = paddle.to_tensor(float(sum(counts)))
        if self.world > 1:
            dist.all_reduce(total)  # data parallelism averages gradients over ranks: undo that, then divide
        scale = self.world / max(float(total), 1.0)
        loss_sum = 0.0
        for micro, batch, count in zip(micros, batches, counts):
            paddle.seed(self.cfg.seed * 1_000_003 + micro)  # dropout depends only on the position: exact resume
            autocast = paddle.amp.auto_cast(level=self.cfg.amp_level, dtype=self.cfg.amp_dtype) if self.amp \
                else contextlib.nullcontext()
            with autocast:
                if self.tensor_inputs:
                    batch = {k: paddle.to_tensor(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}
                out = self.loss_fn(self.train_model, batch)
            loss = out["loss"] * (count * scale)
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_sum += float(out["loss"]) * count
            self.last_output = out
        self.state["micro"] = micros[-1] + 1
        return loss_sum / max(sum(counts), 1), sum(counts)

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

    def train(self, resume: bool = True, stop_after: int = -1) -> dict:
        """Trains to the end (or, for tests of resuming, returns after ``stop_after`` optimizer steps)."""
        if resume:
            self.resume()
        self.model.train()
        cfg = self.cfg
        bar = None
        if cfg.progress and self.rank == 0:
            from tqdm import tqdm
            bar = tqdm(total=self.total_steps, initial=self.state["step"], desc="train", dynamic_ncols=True,
                       mininterval=1.0, disable=None)  # disable=None: no bar when stderr is not a terminal
        tokens, started, losses, window = 0, time.perf_counter(), [], {}
        while self.state["step"] < self.total_steps:
            loss, count = self.accumulate_gradients()
            losses.append(loss)
            tokens += count
            self.optimizer_step(loss)
            step = self.state["step"]
            name = self.last_output.get("name")
            if name:  # one curve per objective (pretraining mixes several), averaged per logging window
                window.setdefault(name, []).append(loss)
            if step % cfg.logging_steps == 0 or step == self.total_steps:
                mean_loss = float(np.mean(losses))
                rate = tokens / max(time.perf_counter() - started, 1e-9)
                lr = self.optimizer.get_lr()
                self.state["history"].append({"step": step, "loss": mean_loss, "lr": lr})
                self.log_scalars({"train/loss": mean_loss, "train/lr": lr, "train/tokens_per_s": rate,
                                  **{f"train/{n}_loss": float(np.mean(v)) for n, v in window.items()}})
                self.state.setdefault("objective_losses", []).extend(
                    [step, n, float(np.mean(v))] for n, v in sorted(window.items()))
                window = {}
                logger.info("step %d/%d loss %.4f lr %.3g %.0f tok/s", step, self.total_steps, mean_loss, lr, rate)
                if bar:
                    bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{rate:.0f}")
                tokens, started, losses = 0, time.perf_counter(), []
            if bar:
                bar.update(1)
            epoch_end = self.state["micro"] // self.per_epoch > (self.state["micro"] - cfg.accumulate) // self.per_epoch
            if (cfg.eval_steps and step % cfg.eval_steps == 0) or (not cfg.eval_steps and epoch_end) \
                    or step == self.total_steps:
                self.run_evaluation()
            if (cfg.save_steps and step % cfg.save_steps == 0) or (not cfg.save_steps and (
                    (cfg.eval_steps and step % cfg.eval_steps == 0) or epoch_end)) or step == self.total_steps:
                self.save_checkpoint()
            if step == stop_after:
                break
        if bar:
            bar.close()
        if self.evaluate is None and self.state["step"] == self.total_steps:
            self.save_model(BEST)  # nothing to compare: the final model is the one to keep
        if self.writer:
            self.writer.close()
        return self.state
