"""The training loop behind ``pem-train``: one process or DDP under ``torchrun``.

Data order is a pure function of (seed, step): the global sample stream is the concatenation of per-epoch
permutations, step s takes stream positions [s*B, (s+1)*B) and rank r takes every W-th of them. Augmentation and the
loss's point sampling are seeded per stream position. So a resumed run continues exactly where it stopped, and W
processes see the same global batch as one process (set ``freeze_bn`` to make BN statistics agree as well on CPU).

A run cannot be lost: a non-empty run folder is refused unless the run resumes or overwrites it; SIGINT/SIGTERM
stop at the next step boundary, save a resumable ``last.pth`` atomically and raise :class:`TrainingInterrupted`
(exit 130); ``last.pth`` is also written every ``checkpoint_minutes``; a non-finite loss (or weights) stops the run
with :class:`NonFiniteLossError`, keeping the last good checkpoint. Every save is a ``{"step", "checkpoint"}``
record in ``log.jsonl``.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pem.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    load_checkpoint,
    nonfinite_tensors,
    read_checkpoint,
    save_checkpoint,
)
from pem.config import PEMConfig, get_preset, short_side_choices
from pem.modeling.pem_model import PEM
from pem.runtime.errors import EXIT_INTERRUPTED, EXIT_SOME_FAILED, PemError
from pem.training.criterion import SetCriterion
from pem.training.matcher import HungarianMatcher
from pem.training.optim import build_optimizer, build_scheduler

LAST_CHECKPOINT = "last.pth"
FINAL_WEIGHTS = "model_final.pth"
LOG_FILE = "log.jsonl"
RUN_FILES = (LAST_CHECKPOINT, FINAL_WEIGHTS, LOG_FILE)


class TrainingError(PemError, ValueError):
    """A run refused before it starts (run folder, resume checks, data); exit 2."""


class NonFiniteLossError(PemError):
    """The loss or the weights became NaN/Inf; the last good checkpoint is kept; exit 1."""

    exit_code = EXIT_SOME_FAILED


class TrainingInterrupted(PemError):
    """SIGINT/SIGTERM stopped the run after saving a resumable checkpoint; exit 130."""

    exit_code = EXIT_INTERRUPTED


@dataclass
class TrainOptions:
    """What ``pem-train`` takes; ``None`` means the preset's value."""

    config: str
    data: Path
    out: Path
    max_steps: int | None = None
    minutes: float | None = None
    stop_after: int | None = None
    resume: bool = False
    resume_or_start: bool = False
    overwrite: bool = False
    force: bool = False
    batch_size: int | None = None
    lr: float | None = None
    accumulate: int = 1
    seed: int = 0
    num_workers: int = 0
    num_points: int | None = None
    init: str | None = None
    crop: tuple[int, int] | None = None
    eval_every: int = 0
    checkpoint_every: int = 500
    checkpoint_minutes: float | None = 5.0
    log_every: int = 10
    freeze_bn: bool = False
    on_error: str = "raise"
    device: str = "auto"
    amp: str = "auto"


AMP_CHOICES = ("auto", "off", "fp16", "bf16")


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype of a training run, None for FP32: ``auto`` is FP16 on CUDA and FP32 elsewhere, ``bf16``
    runs on any device, ``fp16`` needs CUDA (its loss scaling is CUDA's GradScaler). The model keeps its own FP32
    regions under autocast (``pem.ops.precision``)."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"unknown amp {amp!r}; expected one of {', '.join(AMP_CHOICES)}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"amp fp16 needs a CUDA device, got {device}; use bf16 or off")
    if amp == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """Join the process group that ``torchrun`` describes in the environment (gloo on CPU, NCCL on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def stream_index(position: int, dataset_size: int, seed: int) -> int:
    """Dataset index at global stream position ``position`` (one seeded permutation per epoch)."""
    epoch, offset = divmod(position, dataset_size)
    return int(np.random.default_rng([seed, epoch]).permutation(dataset_size)[offset])


def position_seed(seed: int, position: int) -> int:
    """A non-negative 63-bit seed for the augmentation and point sampling of stream position ``position``."""
    return int(np.random.SeedSequence([seed, position]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


class AugmentedSamples(torch.utils.data.Dataset):
    """Maps a stream position to the augmented sample at that position (DataLoader workers may load it)."""

    def __init__(self, dataset: torch.utils.data.Dataset, config: PEMConfig, seed: int) -> None:
        self.dataset, self.config, self.seed = dataset, config, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> dict[str, Any]:
        from pem.data.transforms import TrainTransform

        try:
            sample = self.dataset[stream_index(position, len(self.dataset), self.seed)]
        except PemError as error:  # carried to the main process as data: a worker's traceback helps nobody
            return {"error": str(error), "position": position}
        rng = np.random.default_rng(position_seed(self.seed, position))
        sample = TrainTransform(self.config, rng)(sample)
        sample["position"] = position
        return sample


class StepPositions(torch.utils.data.Sampler):
    """Yields this rank's stream positions for steps ``start_step`` onwards (micro-batch after micro-batch)."""

    def __init__(self, start_step: int, steps: int, batch_size: int, accumulate: int, world: Distributed) -> None:
        self.start_step, self.steps = start_step, steps
        self.batch_size, self.accumulate, self.world = batch_size, accumulate, world

    def __iter__(self) -> Iterator[int]:
        global_batch = self.batch_size * self.accumulate * self.world.world_size
        for step in range(self.start_step, self.steps):
            positions = range(step * global_batch, (step + 1) * global_batch)
            yield from positions[self.world.rank :: self.world.world_size]

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.batch_size * self.accumulate


def _collate_with_positions(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """``pem.data.collate`` plus the stream positions (they seed the loss's point sampling); a sample that failed to
    load makes the batch ``{"error": message}``."""
    from pem.data.datasets import collate

    failed = [sample for sample in samples if "error" in sample]
    if failed:
        return {"error": failed[0]["error"]}
    batch = collate(samples)
    batch["positions"] = [sample["position"] for sample in samples]
    return batch


def _mean_over_processes(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Per-process loss values averaged over processes: the loss of the global batch (see the criterion)."""
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return dict(zip(keys, (tensor / dist.get_world_size()).tolist()))


def _freeze_batchnorm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _move_targets(targets: list[dict[str, torch.Tensor]], device: torch.device) -> list[dict[str, torch.Tensor]]:
    return [{"labels": t["labels"].to(device), "masks": t["masks"].to(device)} for t in targets]


class Progress:
    """One status line with ETA on stderr (rewritten in place on a terminal, every ``every`` steps otherwise)."""

    def __init__(self, total: int, start: int, every: int) -> None:
        self.total, self.start, self.every = total, start, every
        self.started = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, step: int, loss: float, lr: float) -> None:
        done = step - self.start
        if not self.tty and done % self.every and step != self.total:
            return
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else math.inf
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
        line = f"step {step}/{self.total}  loss {loss:.3f}  lr {lr:.2e}  {rate:.2f} it/s  ETA {eta_text}"
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _with_crop(config: PEMConfig, crop: tuple[int, int] | None) -> PEMConfig:
    """``config`` with another training crop; the resize choices scale with it (0.5x to 2x its short side)."""
    if crop is None:
        return config
    short = min(crop)
    train = replace(config.train, crop_size=tuple(crop), min_size_train=short_side_choices(short),
                    max_size_train=4 * max(crop))
    return replace(config, train=train)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class StopSignals:
    """SIGINT/SIGTERM turned into a flag read at step boundaries (installed only in the main thread).

    The first signal sets ``received``; a second SIGINT raises KeyboardInterrupt at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run_identity(config: PEMConfig, options: TrainOptions, batch_size: int) -> dict[str, Any]:
    """What a resumed run must share with the run it continues: preset, data folder, global batch, crop."""
    return {"preset": config.name, "data": str(Path(options.data).resolve()),
            "global_batch": batch_size * options.accumulate, "crop": list(config.train.crop_size)}


def prepare_run_folder(out: Path, options: TrainOptions) -> bool:
    """Check ``out`` against the resume options; returns whether to resume from ``out/last.pth``.

    A non-empty folder needs ``resume``/``resume_or_start`` (continue) or ``overwrite`` (the run files are removed).
    """
    last = out / LAST_CHECKPOINT
    holds = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if options.overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        return False
    if options.resume or options.resume_or_start:
        if last.is_file():
            return True
        if options.resume_or_start and not any(name in holds for name in RUN_FILES):
            return False
        what = "is empty" if not holds else "holds no last.pth"
        hint = "; pass --resume-or-start to start a new run there" if not holds else (
            "; pass --overwrite to start a new run there")
        raise TrainingError(f"--resume: {out} {what}, nothing to resume{hint}")
    if holds:
        shown = ", ".join(holds[:4]) + (" ..." if len(holds) > 4 else "")
        raise TrainingError(f"{out} is not empty ({shown}): pass --resume to continue the run there or --overwrite "
                            "to replace it")
    return False


def _check_resumable(state: dict[str, Any], path: Path, identity: dict[str, Any], force: bool) -> None:
    """Refuse a weights-only file, or a run whose identity differs from this one's (unless ``force``)."""
    missing = [key for key in ("optimizer", "scheduler", "scaler", "step") if key not in state]
    if missing:
        raise TrainingError(f"{path} holds weights only (no {', '.join(missing)}), not a resumable state; "
                            f"start from its weights with --init {path}")
    saved = state.get("run") or {"preset": state.get("preset")}
    differ = [f"{key} {saved[key]!r} -> {identity[key]!r}" for key in identity
              if key in saved and saved[key] != identity[key]]
    if saved.get("preset") not in (None, identity["preset"]) and not force:
        raise CheckpointError(f"{path} belongs to preset {saved['preset']!r}, not {identity['preset']!r}")
    if differ and not force:
        raise TrainingError(f"--resume: this run differs from the one in {path} ({'; '.join(differ)}); "
                            "pass --force to resume anyway")


@dataclass
class _Run:
    """Everything one training run holds: settings, model and optimisation state, data, log and saver."""

    options: TrainOptions
    config: PEMConfig
    device: torch.device
    world: Distributed
    out: Path
    dataset: torch.utils.data.Dataset
    max_steps: int
    per_rank: int
    model: PEM
    ddp_model: nn.Module
    criterion: SetCriterion
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    start_step: int
    saver: _Saver
    log: Any
    progress: Progress | None
    started: float

    @property
    def last(self) -> Path:
        return self.out / LAST_CHECKPOINT


def train(options: TrainOptions) -> dict[str, Any]:
    """Train and return a summary (final step, last losses, paths).

    The steps: :func:`_start_run` (device, processes, run folder, model, optimiser, resume), :func:`_loader` (the
    step-addressed data), then per step :func:`_step_losses` (forward/backward over the micro-batches),
    :func:`_apply_gradients` and :func:`_after_step` (progress, log, checkpoints, evaluation), and
    :func:`_finish_run`.

    Raises TrainingError (refused), NonFiniteLossError (stopped, last good checkpoint kept) or TrainingInterrupted
    (stopped by a signal, resumable checkpoint saved).
    """
    run = _start_run(options)
    batches = iter(_loader(run))
    step, losses = run.start_step, {}
    with StopSignals() as signals:
        try:
            while step < run.max_steps and not _should_stop(run, signals, step):
                totals, data_time = _step_losses(run, batches, signals, step)
                if _any_process(not _finite_losses(totals), run.world, run.device):
                    raise NonFiniteLossError(run.saver.diverged_message(step + 1, "the loss", totals))
                grad_norm = _apply_gradients(run)
                step += 1
                losses = _mean_over_processes(totals, run.device) if run.world.world_size > 1 else totals
                if run.world.is_main:
                    _after_step(run, step, losses, float(grad_norm), data_time)
        except _StopNow:
            pass
        finally:
            if run.progress is not None:
                run.progress.close()
        if signals.received is not None:
            name = signal.Signals(signals.received).name
            if run.world.is_main:
                run.saver.save(step, "interrupt")
                run.log.close()
            raise TrainingInterrupted(f"{name} at step {step}: resumable state saved to {run.last}; "
                                      "continue with --resume")
    _finish_run(run, step)
    return {"step": step, "losses": losses, "checkpoint": str(run.last), "weights": str(run.out / FINAL_WEIGHTS)}


def _start_run(options: TrainOptions) -> _Run:
    """Set up device and processes, check the run folder, build model/criterion/optimiser and resume when asked."""
    config = _with_crop(get_preset(options.config), options.crop)
    device = _device(options.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    world = init_distributed(device)
    torch.manual_seed(options.seed)
    out = Path(options.out)
    if out.exists() and not out.is_dir():
        raise TrainingError(f"--out {out} is a file, not a folder")
    if world.is_main:
        resuming = prepare_run_folder(out, options)
    else:  # the main process checks (and, with overwrite, clears) the folder
        resuming = (options.resume or options.resume_or_start) and not options.overwrite and (
            out / LAST_CHECKPOINT).is_file()
    out.mkdir(parents=True, exist_ok=True)
    max_steps = options.max_steps or config.train.max_iter
    batch_size = options.batch_size or config.train.batch_size
    per_rank = batch_size // world.world_size
    if per_rank * world.world_size != batch_size:
        raise ValueError(f"batch size {batch_size} is not divisible by {world.world_size} processes")
    base_lr = options.lr or config.train.base_lr
    identity = run_identity(config, options, batch_size)

    from pem.data.datasets import build_dataset

    model = PEM(config)
    if options.init is not None:  # full model, or a backbone from pem-convert (ImageNet weights)
        load_checkpoint(model, options.init)
    dataset = build_dataset(config, options.data, "train", on_error=options.on_error)
    model.to(device)
    num_points = options.num_points or 12544
    criterion = SetCriterion(config.num_classes, HungarianMatcher(num_points=num_points), num_points=num_points)
    optimizer = build_optimizer(model, config.train, base_lr)
    scheduler = build_scheduler(optimizer, max_steps, base_lr, config.train.end_lr)
    autocast_dtype = amp_dtype(device, options.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)
    start_step = 0
    last = out / LAST_CHECKPOINT
    if resuming:
        state = read_checkpoint(last)
        _check_resumable(state, last, identity, options.force)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_step = int(state["step"])
    log = (out / LOG_FILE).open("a") if world.is_main else None
    return _Run(
        options=options, config=config, device=device, world=world, out=out, dataset=dataset, max_steps=max_steps,
        per_rank=per_rank, model=model, ddp_model=_distributed(model, device, world, options.freeze_bn),
        criterion=criterion.to(device), optimizer=optimizer, scheduler=scheduler, scaler=scaler,
        autocast_dtype=autocast_dtype, start_step=start_step,
        saver=_Saver(last, model, optimizer, scheduler, scaler, config, options, identity, log, start_step),
        log=log, progress=Progress(max_steps, start_step, options.log_every) if world.is_main else None,
        started=time.perf_counter(),
    )


def _distributed(model: PEM, device: torch.device, world: Distributed, freeze_bn: bool) -> nn.Module:
    """``model`` wrapped in DDP (with synchronised BN on CUDA unless frozen) when there are several processes."""
    if world.world_size == 1:
        return model
    if device.type == "cuda" and not freeze_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _loader(run: _Run) -> torch.utils.data.DataLoader:
    """The training batches from ``run.start_step`` on, in the order a function of (seed, step) fixes."""
    options = run.options
    return torch.utils.data.DataLoader(
        AugmentedSamples(run.dataset, run.config, options.seed),
        batch_size=run.per_rank,
        sampler=StepPositions(run.start_step, run.max_steps, run.per_rank, options.accumulate, run.world),
        num_workers=options.num_workers,
        collate_fn=_collate_with_positions,
        persistent_workers=False,
    )


def _should_stop(run: _Run, signals: StopSignals, step: int) -> bool:
    """A stop signal on any process, the time budget or ``stop_after``: checked only between steps (a forward pass
    updates the BN statistics, so a step is finished or not begun)."""
    options = run.options
    if _any_process(signals.received is not None, run.world, run.device):
        return True
    if options.minutes is not None and time.perf_counter() - run.started > options.minutes * 60:
        return True
    return options.stop_after is not None and step - run.start_step >= options.stop_after


def _step_losses(run: _Run, batches: Iterator[dict[str, Any]], signals: StopSignals,
                 step: int) -> tuple[dict[str, float], float]:
    """Forward and backward over the step's ``accumulate`` micro-batches -> (mean loss terms, data time in s)."""
    options, device = run.options, run.device
    run.ddp_model.train()
    if options.freeze_bn:
        _freeze_batchnorm(run.ddp_model)
    data_time, totals = 0.0, {}
    for micro in range(options.accumulate):
        fetch = time.perf_counter()
        try:
            batch = next(batches)
        except Exception:
            if signals.received is not None:  # a worker that the same Ctrl-C stopped: save the last
                raise _StopNow from None  # finished step (BN statistics may hold this one's batches)
            raise
        if "error" in batch:
            raise TrainingError(f"data error at step {step + 1}: {batch['error']}")
        data_time += time.perf_counter() - fetch
        images = batch["images"].to(device, non_blocking=True)
        targets = _move_targets(batch["targets"], device)
        seeds = [position_seed(options.seed + 1, int(p)) for p in batch["positions"]]
        sync = micro == options.accumulate - 1 or run.world.world_size == 1
        context = run.ddp_model.no_sync() if not sync else contextlib.nullcontext()
        with context:
            with torch.autocast(device.type, dtype=run.autocast_dtype, enabled=run.autocast_dtype is not None):
                outputs = run.ddp_model(images)
            terms = run.criterion(outputs, targets, image_seeds=seeds)
            total = run.criterion.weighted_total(terms) / options.accumulate
            run.scaler.scale(total).backward()
        for key, value in terms.items():
            totals[key] = totals.get(key, 0.0) + float(value.detach()) / options.accumulate
        totals["total"] = totals.get("total", 0.0) + float(total.detach())
    return totals, data_time


def _apply_gradients(run: _Run) -> torch.Tensor:
    """Unscale, clip (-> the gradient norm before clipping), step the optimiser and the schedule."""
    run.scaler.unscale_(run.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.config.train.clip_grad_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    return grad_norm


def _after_step(run: _Run, step: int, losses: dict[str, float], grad_norm: float, data_time: float) -> None:
    """On the main process: progress line, log record, checkpoint by interval or time, periodic evaluation."""
    options = run.options
    lr = max(group["lr"] for group in run.optimizer.param_groups)
    run.progress.update(step, losses["total"], lr)
    if step % options.log_every == 0 or step == run.max_steps:
        record = {"step": step, "lr": lr, "grad_norm": grad_norm, "data_time": data_time,
                  "elapsed": time.perf_counter() - run.started, **losses}
        run.log.write(json.dumps(record) + "\n")
        run.log.flush()
    if step % options.checkpoint_every == 0:
        run.saver.save(step, "interval")
    elif run.saver.due():
        run.saver.save(step, "time")
    if options.eval_every and step % options.eval_every == 0:
        _periodic_eval(run.model, run.config, options, step, run.log)


def _finish_run(run: _Run, step: int) -> None:
    """Save the final resumable state (unless just saved) and the final weights; wait for every process."""
    if run.world.is_main:
        if run.saver.saved_step != step or not run.last.is_file():
            run.saver.save(step, "final")
        save_checkpoint(run.out / FINAL_WEIGHTS, run.model.state_dict(), run.config.name, step=step)
        run.log.close()
    if run.world.world_size > 1:
        dist.barrier()


def _finite_losses(totals: dict[str, float]) -> bool:
    return all(math.isfinite(value) for value in totals.values())


def _any_process(flag: bool, world: Distributed, device: torch.device) -> bool:
    """True on every process when ``flag`` is true on any (so all leave the loop at the same step)."""
    if world.world_size == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value[0])


class _StopNow(Exception):
    """Leaves the training loop from inside a step after a stop signal broke the data loading."""


class _Saver:
    """Writes the resumable state atomically, by step interval, by time, on interrupt and at the end, and never
    over a good checkpoint with non-finite weights."""

    def __init__(self, path: Path, model: PEM, optimizer: torch.optim.Optimizer, scheduler: Any,
                 scaler: torch.amp.GradScaler, config: PEMConfig, options: TrainOptions, identity: dict[str, Any],
                 log: Any, start_step: int) -> None:
        self.path, self.model, self.optimizer, self.scheduler, self.scaler = path, model, optimizer, scheduler, scaler
        self.config, self.options, self.identity, self.log = config, options, identity, log
        self.saved_step: int | None = start_step if path.is_file() else None
        self.saved_at = time.perf_counter()

    def due(self) -> bool:
        minutes = self.options.checkpoint_minutes
        return bool(minutes) and time.perf_counter() - self.saved_at >= minutes * 60

    def diverged_message(self, step: int, what: str, values: dict[str, float] | None = None) -> str:
        detail = ""
        if values:
            bad = [f"{k}={v}" for k, v in values.items() if not math.isfinite(v)]
            detail = f" ({', '.join(bad[:3])})"
        kept = (f"the last good checkpoint {self.path} (step {self.saved_step}) is kept"
                if self.saved_step is not None else "no checkpoint had been saved yet")
        return (f"{what} became non-finite at step {step}{detail}; training stopped, {kept}; "
                "lower --lr or check the data")

    def save(self, step: int, why: str) -> None:
        """Save ``last.pth`` for ``step`` and log it; raises NonFiniteLossError instead when the weights are not
        finite."""
        bad = nonfinite_tensors(self.model.state_dict())
        if bad:
            raise NonFiniteLossError(self.diverged_message(step, f"the weights ({bad[0]} ...)"))
        _save_state(self.path, self.model, self.optimizer, self.scheduler, self.scaler, step, self.config,
                    self.options, self.identity)
        self.saved_step, self.saved_at = step, time.perf_counter()
        self.log.write(json.dumps({"step": step, "checkpoint": why}) + "\n")
        self.log.flush()


def _save_state(path: Path, model: PEM, optimizer: torch.optim.Optimizer, scheduler: Any,
                scaler: torch.amp.GradScaler, step: int, config: PEMConfig, options: TrainOptions,
                identity: dict[str, Any]) -> None:
    """Everything needed to resume, written atomically; ``run`` is what a resume must match."""
    options_dict = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}
    atomic_torch_save(
        {"format": "pem-edge/1", "preset": config.name, "scope": "model", "model": model.state_dict(),
         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
         "step": step, "options": options_dict, "run": identity},
        path,
    )


def _periodic_eval(model: PEM, config: PEMConfig, options: TrainOptions, step: int, log: Any) -> None:
    """Evaluate on the ``val`` split when there is one; the result goes to the JSON-lines log."""
    from pem.evaluation import evaluate, find_split

    if find_split(config, options.data, "val") is None:
        return
    was_training = model.training
    metrics = evaluate(model.eval(), options.data, "val", out=Path(options.out) / f"eval_{step:07d}")
    model.train(was_training)
    log.write(json.dumps({"step": step, "eval": metrics["summary"]}) + "\n")
    log.flush()
