"""The one training loop every strategy runs on.

Per increment: ``before_training_exp`` -> (per epoch: fresh seeded doublets ->
per step: ``before_forward``, forward, ``after_forward``, ``criterion``,
``before_backward``, backward, ``after_backward``, ``before_update``, step,
``after_update``, ``after_training_iteration``) -> ``after_training_exp`` -> evaluation
on every task seen so far -> results and a checkpoint written atomically.

Hooks receive a :class:`~cl_fir.engine.context.StepContext`. What the loop needs besides lives
in modules of its own: the task family's forward pass (``cl_fir.families``), dividing batches
over processes (``sharding``), agreeing on a stop (``stop``), evaluation and class means
(``evaluation``, ``class_means``), seeded loaders (``seeded_loader``) and cost (``cost``).

Randomness is derived from the run seed, the increment and the epoch only, so an epoch
draws the same doublets and flips whatever ran before it.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from cl_fir.config import RunConfig
from cl_fir.engine.context import StepContext
from cl_fir.engine.cost import CostMeter
from cl_fir.engine.data_division import DataDivision
from cl_fir.engine.epoch_loader import EpochLoader
from cl_fir.engine.evaluation import IncrementEvaluation
from cl_fir.engine.loss_readback import LossReadback
from cl_fir.engine.progress import Reporter
from cl_fir.engine.seeded_loader import SeededBatches, seeded_loader
from cl_fir.engine.seeding import Stream, derive_seed, rng_state, set_rng_state
from cl_fir.engine.sharding import BatchSharding
from cl_fir.engine.stop import STOP_POLL_STEPS, RunInterrupted, StopAgreement
from cl_fir.errors import TrainingError
from cl_fir.families import TaskFamily
from cl_fir.models.routing import clear_auxiliary
from cl_fir.runtime.device import DeviceSetup
from cl_fir.runtime.distributed import DistributedContext
from cl_fir.scenario import Increment

__all__ = ["RunInterrupted", "TrainingLoop"]


class TrainingLoop:
    def __init__(self, cfg: RunConfig, scenario, strategy, model: torch.nn.Module, family: TaskFamily,
                 setup: DeviceSetup, cost: CostMeter, reporter: Reporter | None = None,
                 on_increment_end: Callable[["TrainingLoop", Increment, dict], None] | None = None,
                 dist: DistributedContext | None = None):
        self.cfg = cfg
        self.scenario = scenario
        self.strategy = strategy
        self.model = model
        self.family = family
        self.setup = setup
        self.cost = cost
        #: data-parallel ranks (one process unless started by torchrun); all of them embed for
        #: evaluation, rank 0 scores and writes
        self.dist = dist or DistributedContext()
        self.sharding = BatchSharding(self.dist, family.paired)
        self.stop = StopAgreement(self.dist)
        self.reporter = reporter or Reporter(enabled=False)
        self.on_increment_end = on_increment_end
        self.evaluation = IncrementEvaluation(cfg, scenario, setup, self.dist, cost, self.num_workers)
        #: Weights at the start of the run (static retraining restarts from them).
        self.initial_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
        self.increment: Increment | None = None
        self.epoch = 0
        self.iteration = 0
        self.step_in_epoch = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        #: what the strategy's hooks see
        self.context = StepContext(self)
        #: divides the data into clusters and tags batches with them, for heads that ask (D&C)
        self.division = DataDivision.for_model(model)
        #: step losses to the host (one step late on CUDA, so the host never waits for the GPU)
        self.loss_readback = LossReadback.for_device(setup.device, self._non_finite_loss)
        #: called with the loop every ``train.checkpoint_every`` steps and before stopping on a signal
        self.on_checkpoint: Callable[["TrainingLoop"], None] | None = None

    @property
    def num_workers(self) -> int:
        n = self.cfg.train.num_workers
        return n if n >= 0 else (4 if self.setup.device.type == "cuda" else 0)

    @property
    def loss(self) -> torch.Tensor | None:
        """The last step's loss."""
        return self.context.loss

    def _loader(self, dataset, batches, persistent: bool):
        return seeded_loader(dataset, batches, self.num_workers, self.setup.device.type == "cuda",
                             self.cfg.train.prefetch_factor, persistent)

    def epoch_seed(self, epoch: int, stream: Stream, *parts: int) -> int:
        """A seed for one random stream of one epoch of the current increment (see :meth:`StepContext.epoch_seed`)."""
        return derive_seed(self.cfg.seed, self.increment.index, epoch, stream, *parts)

    def reset_model(self) -> None:
        """Restore the initial weights (for strategies that retrain from scratch)."""
        self.model.load_state_dict(self.initial_state)

    # ------------------------------------------------------------------ stopping

    @property
    def stop_requested(self) -> str | None:
        return self.stop.requested

    def request_stop(self, reason: str) -> None:
        """Ask the loop to checkpoint and stop at the next step (signal handlers call this;
        under torchrun, at the next step where the ranks compare requests)."""
        self.stop.request(reason)

    # ------------------------------------------------------------------ run

    def run(self, start_increment: int = 0, stop_increment: int | None = None, resume: dict | None = None) -> None:
        """Train and evaluate increments ``start_increment`` .. ``stop_increment - 1``.

        ``resume`` is a mid-increment checkpoint of ``start_increment`` (see :meth:`position_state`).
        """
        for inc in self.scenario.increments[start_increment:stop_increment]:
            self.train_increment(inc, resume if resume is not None and resume["increment"] == inc.index else None)
            self.dist.check_in_sync(self.model, f"after increment {inc.index + 1}")
            if self.evaluation.stores_centroids:
                self.store_centroids()
            results = self.evaluate_increment(inc)
            if self.dist.is_main and self.on_increment_end is not None:
                self.on_increment_end(self, inc, results)
            self.dist.barrier()
            self.stop.stop_if(self.stop.agreed(poll=True))

    def store_centroids(self) -> None:
        """Prioritised retrieval's class centroids of the tasks just trained (the strategy's own, or
        class means); the pass counts in the training cost."""
        ctx = self.context
        with self.cost.training_time():
            self.evaluation.store_centroids(self.strategy.class_centroids(ctx), self.model,
                                            self.strategy.training_increments(ctx))

    def evaluate_increment(self, inc: Increment) -> dict:
        """Every task seen after ``inc``: every rank embeds a share, rank 0 scores (the others get none)."""
        self.strategy.before_eval(self.context)
        results = self.evaluation.evaluate(self.model, inc.index)
        self.strategy.after_eval(self.context)
        return results

    def train_increment(self, inc: Increment, resume: dict | None = None) -> None:
        """Train one increment. Everything it runs is training time (:meth:`CostMeter.training_time`):
        the strategy's hooks and their extra passes as much as the epochs; only data waits are
        booked apart."""
        self.increment = inc
        ctx = self.context
        self.cost.start(inc.index)
        with self.cost.training_time():
            self.strategy.before_training_exp(ctx)
            sources = self.strategy.training_increments(ctx)
            self.optimizer, self.scheduler = self.strategy.make_optimizer(ctx)
            start_epoch, start_step = 0, 0
            if resume is not None:   # continue mid-increment: what before_training_exp set up is overwritten
                self.load_position_state(resume)
                self.cost.restart_training_time()   # the checkpoint's cost holds the time until it
                start_epoch, start_step = resume["epoch"], resume["step"]
            self.model.train()
            n_inc = len(self.scenario.increments)
            names = ", ".join(self.scenario.meta.names[a] for a in inc.attributes)
            self.reporter.log(f"[bold]increment {inc.index + 1}/{n_inc}[/bold]: {names}"
                              + (f" (training on increments {sources[0] + 1}-{sources[-1] + 1})"
                                 if len(sources) > 1 else ""))
            # one loader and its workers for every epoch on the same dataset (train.persistent_workers)
            epoch_loader = EpochLoader(self._loader, self.cfg.train.persistent_workers and self.num_workers > 0)
            try:
                self._train_epochs(start_epoch, start_step, resume, epoch_loader)
            finally:
                epoch_loader.close()
            self.strategy.after_training_exp(ctx)
        self.cost.record_peak_memory()

    def timed_batches(self, loader):
        """The batches of ``loader``, the time spent waiting for each booked as data wait.
        The loader's iterator is made at once: making it draws from torch's random state."""
        batches = iter(loader)

        def timed():
            while True:
                t0 = time.perf_counter()
                batch = next(batches, None)
                self.cost.add_data_wait(time.perf_counter() - t0)
                if batch is None:
                    return
                yield batch

        return timed()

    def _train_epochs(self, start_epoch: int, start_step: int, resume: dict | None,
                      epoch_loader: EpochLoader) -> None:
        """The epochs of the current increment from ``start_epoch`` (``start_step`` steps of
        it already done when resuming)."""
        t = self.cfg.train
        ctx = self.context
        for epoch in range(start_epoch, t.epochs):
            self.epoch = epoch
            skip = start_step if epoch == start_epoch else 0
            torch.manual_seed(self.epoch_seed(epoch, Stream.STEP_DRAWS))   # dropout, strategies' draws
            self.set_model_epoch(epoch)
            dataset, sampler = self.strategy.training_batches(ctx, epoch)
            if self.division is not None:
                dataset, sampler = self.division.group_epoch(self, dataset, sampler, epoch)
            seeds = self.epoch_seed(epoch, Stream.AUGMENTATION)
            loader = epoch_loader.for_epoch(dataset, SeededBatches(sampler, skip, seeds, self.sharding.shard))
            self.strategy.before_training_epoch(ctx)
            self.step_in_epoch = skip
            self.loss_readback.reset()
            steps = 0
            epoch_start = time.perf_counter()
            with self.reporter.task(len(sampler) - skip, f"  epoch {epoch + 1}/{t.epochs}") as advance:
                batches = self.timed_batches(loader)
                if skip:   # the random state right after the checkpointed step (strategies' own draws)
                    set_rng_state(resume["rng"])
                for batch in batches:
                    loss = self.training_step(batch)
                    self.step_in_epoch += 1
                    steps += 1
                    advance(1, "" if loss is None else f"loss {loss:.3f}")
                    every = t.checkpoint_every
                    stop = self.stop.agreed(poll=self.step_in_epoch % STOP_POLL_STEPS == 0)
                    if self.on_checkpoint is not None and (stop or (every and self.iteration % every == 0)):
                        self.loss_readback.flush()   # never checkpoint weights trained on a non-finite loss
                        self.cost.book_training_time()
                        self.on_checkpoint(self)
                    self.stop.stop_if(stop)
            self.loss_readback.flush()
            if self.setup.device.type == "cuda":
                torch.cuda.synchronize(self.setup.device)
            self.scheduler.step()
            self.strategy.after_training_epoch(ctx)
            images = steps * 2 * t.batch_size
            self.reporter.log(f"  epoch {epoch + 1}/{t.epochs}: loss {self.loss_readback.mean:.4f}, "
                              f"{steps} steps, {images / max(time.perf_counter() - epoch_start, 1e-9):.0f} img/s")

    def set_model_epoch(self, epoch: int) -> None:
        """Models with a schedule of their own (ASEN++'s global-only epochs) enter ``epoch``'s
        phase: the student and every other copy the strategy runs (teachers, frozen old models,
        :meth:`Strategy.model_copies`), so that a teacher's embeddings are comparable with the
        student's (a copy with the local branch active against a global-only student left
        cos = 0.78 between identical weights)."""
        for model in (self.model, *self.strategy.model_copies(self.context)):
            for m in model.modules():
                if hasattr(m, "set_epoch"):
                    m.set_epoch(epoch)

    # ------------------------------------------------------------------ a step

    def forward_batch(self, raw) -> int:
        """A loader batch to the device (``before_forward`` in between) and through the model,
        then gathered over processes: sets the context's batch; returns the images forwarded."""
        ctx = self.context
        ctx.batch = batch = self.family.load(raw, self.setup, self.dist.rank)
        ctx.loss, ctx.loss_terms = None, {}
        self.strategy.before_forward(ctx)
        n_images = self.family.forward(self.model, batch, self.setup)
        batch.local_outputs = batch.outputs
        if self.dist.enabled:   # the whole batch on every rank, differentiably, as one process sees it
            pairs = self.dist.gather_pairs     # outputs are [anchors; positives] or [queries; targets]
            batch.outputs, batch.labels = pairs(batch.outputs), pairs(batch.labels)
            if batch.branches:
                batch.branches = [(w, pairs(out)) for w, out in batch.branches]
            batch.gather_tasks = self.sharding.gather
        return n_images

    def training_step(self, raw) -> float | None:
        """One optimizer step; returns the latest loss that has reached the host (on CUDA the
        previous step's, None at the first step: see ``engine/loss_readback.py``)."""
        n_images = self.forward_batch(raw)
        ctx, strategy = self.context, self.strategy
        strategy.after_forward(ctx)
        ctx.add_loss("metric", strategy.criterion(ctx))
        strategy.before_backward(ctx)
        # heads' own terms (e.g. CRT's diversity), after the strategy's: the student's forward of the
        # batch recorded them once; the strategy's extra passes through the student's heads
        # (distillation under old attributes) record them again, and those copies are dropped
        clear_auxiliary(self.model)
        if ctx.batch.aux is not None:
            ctx.add_loss("auxiliary", ctx.batch.aux)
        where = (self.increment.index, self.epoch, self.step_in_epoch)
        if not self.loss_readback.deferred:   # read at once: a non-finite loss never reaches the weights
            self.loss_readback.push(ctx.loss, where)
        self.optimizer.zero_grad(set_to_none=True)
        ctx.loss.backward()
        self.dist.average_gradients(self.model.parameters())
        strategy.after_backward(ctx)
        strategy.before_update(ctx)
        self.optimizer.step()
        self.dist.broadcast_buffers(self.model)
        strategy.after_update(ctx)
        self.iteration += 1
        self.cost.add_training_step(n_images)
        strategy.after_training_iteration(ctx)
        if self.loss_readback.deferred:       # queued behind the whole step; the previous one is read
            self.loss_readback.push(ctx.loss, where)
        return self.loss_readback.latest

    def _non_finite_loss(self, value: float, where: tuple[int, int, int]) -> None:
        increment, epoch, step = where
        raise TrainingError(
            f"non-finite loss ({value}) at increment {increment + 1}, epoch {epoch + 1}, step {step + 1}; training "
            f"stopped and nothing after the last checkpoint was kept (continue from it with `cl-fir run --resume "
            f"RUN_DIR`, with --force --set train.lr=... for a lower learning rate from the next increment on)"
        )

    def seeded_pass_loader(self, increments: list[int], batches: int, batch_size: int, seeds: tuple[int, int]):
        """The loader of a seeded pass over training data: ``batches`` fresh batches of
        ``batch_size`` doublets (triplets) of ``increments``, this process's share of each, drawn
        with ``seeds = (batch seed, augmentation seed)``."""
        dataset, table = self.scenario.training_data(increments)
        sampler = self.family.sampler(table, batch_size, batch_size * batches, seeds[0])
        return self._loader(dataset, SeededBatches(sampler, 0, seeds[1], self.sharding.shard), persistent=False)

    def squared_sample_gradients(self, params: dict[str, torch.nn.Parameter], sample_losses, batches: int,
                                 batch_size: int, seeds: tuple[int, int], increments: list[int]):
        """:meth:`StepContext.squared_sample_gradients`. Counted in the cost: one forward of this
        rank's images and one backward of them per sample."""
        loader = self.seeded_pass_loader(increments, batches, batch_size, seeds)
        total = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        samples = 0
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        try:
            for raw in self.timed_batches(loader):
                n_images = self.forward_batch(raw)
                terms = sample_losses()
                squares = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
                n_samples = terms.shape[0]
                try:
                    for i in range(n_samples):
                        self.model.zero_grad(set_to_none=True)
                        terms[i].backward(retain_graph=i < n_samples - 1)
                        self.dist.average_gradients(params.values())
                        for name, p in params.items():
                            if p.grad is not None:
                                squares[name] += p.grad.detach().float() ** 2
                finally:
                    self.model.zero_grad(set_to_none=True)
                self.cost.add_sample_gradients(n_images, n_samples)
                for name, sq in squares.items():
                    total[name] += sq
                samples += n_samples
        finally:
            for m, mode in modes.items():
                m.training = mode
            self.context.batch = None
        return total, samples

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "strategy": self.strategy.state_dict(),
            "iteration": self.iteration,
            "division": self.division.state_dict() if self.division is not None else None,
            "task_centroids": self.evaluation.task_centroids,
        }

    def position_state(self) -> dict:
        """Everything to continue in the middle of the current increment, after the last step."""
        return {
            "increment": self.increment.index,
            "epoch": self.epoch,
            "step": self.step_in_epoch,
            "loop": self.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "cost": self.cost.to_dict(),
            "rng": rng_state(),
        }

    def load_position_state(self, state: dict) -> None:
        self.load_state_dict(state["loop"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.cost.load(state["cost"])

    def load_state_dict(self, state: dict) -> None:
        """Restore an increment-boundary state (see :meth:`state_dict`)."""
        self.model.load_state_dict(state["model"])
        self.strategy.load_state_dict(state["strategy"], self.context)
        self.iteration = int(state["iteration"])
        if self.division is not None and state.get("division") is not None:
            self.division.load_state_dict(state["division"])
        self.evaluation.task_centroids = dict(state.get("task_centroids") or {})
