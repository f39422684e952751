"""The one training loop every strategy runs on.

Per increment: ``before_training_exp`` -> (per epoch: fresh seeded doublets ->
per step: ``before_forward``, forward, ``after_forward``, ``criterion``,
``before_backward``, backward, ``after_backward``, ``before_update``, step,
``after_update``, ``after_training_iteration``) -> ``after_training_exp`` -> evaluation
on every task seen so far -> results and a checkpoint written atomically.

Randomness is derived from the run seed, the increment and the epoch only, so an epoch
draws the same doublets and flips whatever ran before it.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from cl_fir.config import RunConfig
from cl_fir.data.device_decoding import collate_images
from cl_fir.engine.cost import CostMeter
from cl_fir.engine.data_division import DataDivision, untransformed_view
from cl_fir.engine.distributed import DistributedContext
from cl_fir.engine.epoch_loader import EpochLoader
from cl_fir.engine.device import DeviceSetup
from cl_fir.engine.loss_readback import LossReadback
from cl_fir.engine.progress import Reporter
from cl_fir.engine.seeding import Stream, derive_seed, rng_state, set_rng_state, worker_init
from cl_fir.errors import ConfigError, TrainingError
from cl_fir.evaluation.evaluator import embed_under_attributes, evaluate_tasks
from cl_fir.models import RetrievalModel
from cl_fir.models.retrieval_model import auxiliary_loss, clear_auxiliary
from cl_fir.scenario import Increment, Scenario
from cl_fir.strategy import Strategy


#: under torchrun, ranks compare stop requests every this many steps (a host wait each time)
STOP_POLL_STEPS = 16


class RunInterrupted(KeyboardInterrupt):
    """Raised after a signal-requested checkpoint; the run is resumable."""


class SeededBatches(Sampler):
    """A batch sampler whose items are ``(key, seed)``: each sample's augmentation seed comes
    from the epoch's seed and the sample's position (batch, slot) alone. Which process or
    DataLoader worker loads it does not matter, so the number of workers, data-parallel
    ranks (``shard`` reduces each batch to this rank's part, after seeding) and resuming
    mid-epoch (the first ``skip`` batches are drawn, not loaded) leave the augmentations
    unchanged. :class:`SeededItems` applies the seed."""

    def __init__(self, sampler, skip: int, seed: int, shard: Callable[[list], list] | None = None):
        self.sampler, self.skip, self.seed, self.shard = sampler, skip, seed, shard

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)

    def __iter__(self):
        for b, batch in enumerate(self.sampler):
            if b < self.skip:
                continue
            seeds = np.random.SeedSequence([self.seed, b]).generate_state(len(batch), dtype=np.uint64)
            keyed = [(key, int(s)) for key, s in zip(batch, seeds)]
            yield keyed if self.shard is None else self.shard(keyed)


class SeededItems(Dataset):
    """Reads ``(key, seed)``: the wrapped item, drawn with torch's CPU generator seeded with
    ``seed`` (the caller's random state is restored afterwards)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key_seed):
        key, seed = key_seed
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also (lazily) re-seed every CUDA
            # generator, outside what fork_rng restores, and its lazy-call bookkeeping costs
            # about as much as loading a small image
            torch.default_generator.manual_seed(seed)
            return self.dataset[key]


class TrainingLoop:
    def __init__(self, cfg: RunConfig, scenario: Scenario, strategy: Strategy, model: RetrievalModel,
                 setup: DeviceSetup, cost: CostMeter, reporter: Reporter | None = None,
                 on_increment_end: Callable[["TrainingLoop", Increment, dict], None] | None = None,
                 dist: DistributedContext | None = None):
        self.cfg = cfg
        #: data-parallel ranks (one process unless started by torchrun); all of them embed for
        #: evaluation, rank 0 scores and writes
        self.dist = dist or DistributedContext()
        if cfg.eval.mode == "prioritized" and getattr(scenario, "protocol", "ranking") != "ranking":
            raise ConfigError(f"eval.mode (--eval-mode) prioritized needs attribute values (ranking protocol); "
                              f"scenario {scenario.name} uses the {scenario.protocol} protocol")
        #: attribute -> (class centroids (values x D), valid values): prioritised retrieval's stored centroids
        self.task_centroids: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.scenario = scenario
        self.strategy = strategy
        self.model = model
        self.setup = setup
        self.cost = cost
        self.reporter = reporter or Reporter(enabled=False)
        self.on_increment_end = on_increment_end
        #: Weights at the start of the run (static retraining restarts from them).
        self.initial_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
        self.increment: Increment | None = None
        self.epoch = 0
        self.iteration = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        self.mb_x = self.mb_y = self.mb_task = self.mb_group = self.mb_output = self.mb_features = self.loss = None
        self.mb_local_output = None
        #: the heads' auxiliary losses (CRT's diversity, ...) recorded by the student's forward of
        #: the batch; None when there are none
        self.mb_aux: torch.Tensor | None = None
        #: ``[(weight, embeddings)]`` per branch of models with several (ASEN++), else None
        self.mb_branches = None
        self.mb_target_x = self.mb_text = self.mb_text_features = None     # composed family only
        #: divides the data into clusters and tags batches with them, for heads that ask (D&C)
        self.division = DataDivision.for_model(model)
        self.step_in_epoch = 0
        #: step losses to the host (one step late on CUDA, so the host never waits for the GPU)
        self.loss_readback = LossReadback.for_device(setup.device, self._non_finite_loss)
        #: called with the loop every ``train.checkpoint_every`` steps and before stopping on a signal
        self.on_checkpoint: Callable[["TrainingLoop"], None] | None = None
        self.stop_requested: str | None = None
        self._stop_poll: str | None = None      # torchrun: the last agreed stop request (_agreed_stop)

    @property
    def num_workers(self) -> int:
        n = self.cfg.train.num_workers
        return n if n >= 0 else (4 if self.setup.device.type == "cuda" else 0)

    def seeded_loader(self, dataset, batch_sampler, seed: int, skip: int = 0,
                      shard: Callable[[list], list] | None = None) -> DataLoader:
        """A DataLoader whose samples draw their augmentations from ``seed`` and their position
        (:class:`SeededBatches`), so the number of workers never changes what is drawn; for
        strategies' own passes over training data too (e.g. EWC's Fisher)."""
        return self._loader(dataset, SeededBatches(batch_sampler, skip, seed, shard), persistent=False)

    def _loader(self, dataset, batches: Sampler, persistent: bool) -> DataLoader:
        workers = self.num_workers
        return DataLoader(SeededItems(dataset), batch_sampler=batches, num_workers=workers,
                          pin_memory=self.setup.device.type == "cuda", worker_init_fn=worker_init,
                          collate_fn=collate_images, persistent_workers=persistent and workers > 0,
                          prefetch_factor=self.cfg.train.prefetch_factor if workers > 0 else None)

    def epoch_seed(self, epoch: int, stream: Stream, *parts: int) -> int:
        """A seed for one random stream (:class:`~cl_fir.engine.seeding.Stream`) of one epoch of
        the current increment; ``parts`` split a stream further (e.g. into segments of an epoch)."""
        return derive_seed(self.cfg.seed, self.increment.index, epoch, stream, *parts)

    def reset_model(self) -> None:
        """Restore the initial weights (for strategies that retrain from scratch)."""
        self.model.load_state_dict(self.initial_state)

    # ------------------------------------------------------------------ run

    def run(self, start_increment: int = 0, stop_increment: int | None = None, resume: dict | None = None) -> None:
        """Train and evaluate increments ``start_increment`` .. ``stop_increment - 1``.

        ``resume`` is a mid-increment checkpoint of ``start_increment`` (see :meth:`position_state`).
        """
        for inc in self.scenario.increments[start_increment:stop_increment]:
            self.train_increment(inc, resume if resume is not None and resume["increment"] == inc.index else None)
            self.dist.check_in_sync(self.model, f"after increment {inc.index + 1}")
            if self.cfg.eval.mode == "prioritized":
                with self.cost.training_time():    # the centroid pass counts in the training cost
                    self.store_centroids()
            results = self.evaluate_increment(inc)   # every rank embeds a share; rank 0 scores
            if self.dist.is_main and self.on_increment_end is not None:
                self.on_increment_end(self, inc, results)
            self.dist.barrier()
            self._stop_if_agreed(self._agreed_stop(poll=True))

    def request_stop(self, reason: str) -> None:
        """Ask the loop to checkpoint and stop at the next step (signal handlers call this;
        under torchrun, at the next step where the ranks compare requests)."""
        self.stop_requested = reason

    def _agreed_stop(self, poll: bool) -> str | None:
        """The stop request every rank acts on. One process: its own, at once. Under torchrun:
        any rank's, as found by the last poll, so that all ranks checkpoint and stop at the
        same step. A poll is a collective whose value the host reads (it waits for the GPU), so
        the loop polls every ``STOP_POLL_STEPS`` steps and at the end of each increment,
        not after every step."""
        if not self.dist.enabled:
            return self.stop_requested
        if poll:
            self._stop_poll = self.dist.any_flag(self.stop_requested)
        return self._stop_poll

    @staticmethod
    def _stop_if_agreed(stop: str | None) -> None:
        if stop:
            raise RunInterrupted(f"stopped by {stop}; continue with: cl-fir run --resume <run dir>")

    def train_increment(self, inc: Increment, resume: dict | None = None) -> None:
        """Train one increment. Everything it runs is training time (:meth:`CostMeter.training_time`):
        the strategy's hooks and their extra passes as much as the epochs; only data waits are
        booked apart."""
        self.increment = inc
        self.cost.start(inc.index)
        with self.cost.training_time():
            self.strategy.before_training_exp(self)
            sources = self.strategy.training_increments(self)
            self.optimizer, self.scheduler = self.strategy.make_optimizer(self)
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
            self.strategy.after_training_exp(self)
        self.cost.record_peak_memory()

    def timed_batches(self, loader):
        """The batches of ``loader``, the time spent waiting for each booked as data wait (the
        training epochs, and strategies' own passes over training data such as EWC's Fisher).
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
        for epoch in range(start_epoch, t.epochs):
            self.epoch = epoch
            skip = start_step if epoch == start_epoch else 0
            torch.manual_seed(self.epoch_seed(epoch, Stream.STEP_DRAWS))   # dropout, strategies' draws
            self.set_model_epoch(epoch)
            dataset, sampler = self.strategy.training_batches(self, epoch)
            if self.division is not None:
                dataset, sampler = self.division.group_epoch(self, dataset, sampler, epoch)
            seeds = self.epoch_seed(epoch, Stream.AUGMENTATION)
            loader = epoch_loader.for_epoch(dataset, SeededBatches(sampler, skip, seeds, self.batch_shard))
            self.strategy.before_training_epoch(self)
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
                    stop = self._agreed_stop(poll=self.step_in_epoch % STOP_POLL_STEPS == 0)
                    if self.on_checkpoint is not None and (stop or (every and self.iteration % every == 0)):
                        self.loss_readback.flush()   # never checkpoint weights trained on a non-finite loss
                        self.cost.book_training_time()
                        self.on_checkpoint(self)
                    self._stop_if_agreed(stop)
            self.loss_readback.flush()
            if self.setup.device.type == "cuda":
                torch.cuda.synchronize(self.setup.device)
            self.scheduler.step()
            self.strategy.after_training_epoch(self)
            images = steps * 2 * t.batch_size
            self.reporter.log(f"  epoch {epoch + 1}/{t.epochs}: loss {self.loss_readback.mean:.4f}, "
                              f"{steps} steps, {images / max(time.perf_counter() - epoch_start, 1e-9):.0f} img/s")

    def set_model_epoch(self, epoch: int) -> None:
        """Models with a schedule of their own (ASEN++'s global-only epochs) enter ``epoch``'s
        phase: the student and every other copy the strategy runs (teachers, frozen old models,
        :meth:`Strategy.model_copies`), so that a teacher's embeddings are comparable with the
        student's (a copy with the local branch active against a global-only student left
        cos = 0.78 between identical weights)."""
        for model in (self.model, *self.strategy.model_copies(self)):
            for m in model.modules():
                if hasattr(m, "set_epoch"):
                    m.set_epoch(epoch)

    def forward_batch(self, batch) -> int:
        """Move a batch to the device and run the model: sets ``mb_*`` and returns the number
        of images forwarded (used by the training step, and by strategies, e.g. EWC's Fisher)."""
        if self.scenario.protocol == "composed":
            return self._composed_forward(batch)
        return self._attribute_forward(batch)

    def _composed_forward(self, batch) -> int:
        """Composed family: ``mb_output = [queries; targets]`` (B each), ``mb_x`` the reference
        images, ``mb_target_x`` the targets, ``mb_text`` the modification texts; ``mb_features``
        and ``mb_text_features`` the references' image and text features (before composition)."""
        ref, texts, tgt, task = batch
        self.mb_x, self.mb_target_x, self.mb_text = self.setup.to_device(ref), self.setup.to_device(tgt), list(texts)
        self.mb_task = self.setup.from_host(task)
        # each query's target is its partner; ids count over the whole batch across ranks (see gather_pairs)
        b = self.mb_x.shape[0]
        self.mb_y = (torch.arange(b, device=self.setup.device) + self.dist.rank * b).repeat(2)
        self.mb_group = None
        self.strategy.before_forward(self)
        clear_auxiliary(self.model)
        with self.setup.autocast():
            self.mb_features = self.model.image_features(self.mb_x)
            self.mb_text_features = self.model.text_features(self.mb_text, self.setup.device)
            queries = self.model.compose(self.mb_features, self.mb_text_features, self.mb_task)
            self.mb_output = torch.cat([F.normalize(queries.float(), dim=1), self.model.embed_target(self.mb_target_x)])
        self.mb_aux = auxiliary_loss(self.model)
        return 2 * b

    def training_step(self, batch) -> float | None:
        """One optimizer step; returns the latest loss that has reached the host (on CUDA the
        previous step's, None at the first step: see ``engine/loss_readback.py``)."""
        return self._backward_and_step(self.forward_batch(batch))

    def per_sample_draw(self, draw: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """Random values for this process's samples of the current batch: ``draw(n)`` gives n
        of them (first dimension n). Under torchrun every rank draws for the whole batch and
        keeps its own rows, so the run draws exactly what one process would (strategies'
        per-sample draws, e.g. the old attribute each sample is distilled under)."""
        n_local = self.mb_x.shape[0]
        if not self.dist.enabled:
            return draw(n_local)
        whole = draw(n_local * self.dist.world_size)
        return whole[self.dist.local_rows(n_local, paired=self.scenario.protocol != "composed")]

    def per_sample_choice(self, options) -> torch.Tensor:
        """One of ``options`` (ints) per sample of this process, uniformly, on the device:
        :meth:`per_sample_draw` of indices into them (e.g. the old attribute each sample is
        distilled under)."""
        options = torch.as_tensor(list(options))
        # picked on the host, which keeps a copy: routing by these attributes reads nothing back
        return self.setup.from_host(options[self.per_sample_draw(lambda n: torch.randint(len(options), (n,)))])

    def _non_finite_loss(self, value: float, where: tuple[int, int, int]) -> None:
        increment, epoch, step = where
        raise TrainingError(
            f"non-finite loss ({value}) at increment {increment + 1}, epoch {epoch + 1}, step {step + 1}; training "
            f"stopped and nothing after the last checkpoint was kept (continue from it with `cl-fir run --resume "
            f"RUN_DIR`, with --force --set train.lr=... for a lower learning rate from the next increment on)"
        )

    def _attribute_forward(self, batch) -> int:
        x, y, task, *group = batch
        self.mb_x = self.setup.to_device(x)
        self.mb_y = y.to(self.setup.device, non_blocking=True)
        self.mb_task = self.setup.from_host(task)          # the host keeps a copy, for routing
        self.mb_group = group[0].to(self.setup.device, non_blocking=True) if group else None
        self.strategy.before_forward(self)
        clear_auxiliary(self.model)
        with self.setup.autocast():
            grouped = {} if self.mb_group is None else {"groups": self.mb_group}
            self.mb_output, self.mb_features = self.model(self.mb_x, self.mb_task, return_features=True, **grouped)
        self.mb_aux = auxiliary_loss(self.model)    # this forward's own, once (see _backward_and_step)
        self.mb_branches = getattr(self.model, "training_branches", None)
        if self.mb_branches is not None:   # taken: a copy of the model (lwf's, modc's old model) cannot hold a graph
            self.model.training_branches = None
        return self.mb_x.shape[0]

    def squared_sample_gradients(self, batch, sample_losses: Callable[["TrainingLoop"], torch.Tensor],
                                 params: dict[str, torch.nn.Parameter]) -> tuple[dict[str, torch.Tensor], int]:
        """For strategies' own passes over training data (EWC's empirical Fisher): forward this
        rank's share of ``batch`` (from a loader sharded with :attr:`batch_shard`), take
        ``sample_losses(loop)`` (one term per sample of the whole batch, see
        :meth:`Strategy.sample_losses`) and, for each sample, the gradient of its term, averaged
        over ranks as in a training step (every rank holds what one process would). Returns
        the sum over the samples of each parameter's squared gradient (float32) and the number
        of samples; no strategy hooks, no update. Counted in the cost: one backward of this
        rank's images per sample."""
        n_images = self.forward_batch(batch)
        self._gather_batch()
        terms = sample_losses(self)
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
        return squares, n_samples

    @property
    def batch_shard(self) -> Callable[[list], list] | None:
        """How a batch of sample indices is cut into this rank's share (None in one process)."""
        if not self.dist.enabled:
            return None
        return self.dist.shard_triplets if self.scenario.protocol == "composed" else self.dist.shard

    def _gather_batch(self) -> None:
        """Under torchrun, the whole batch's outputs, labels and branch outputs on every rank
        (differentiable), so the strategy's loss sees the whole batch, as in one process;
        ``mb_local_output`` keeps this rank's rows (for per-sample terms such as distillation)."""
        self.mb_local_output = self.mb_output
        if self.dist.enabled:
            self.mb_output = self.dist.gather_pairs(self.mb_output)
            self.mb_y = self.dist.gather_pairs(self.mb_y)
            if self.mb_branches:
                self.mb_branches = [(w, self.dist.gather_pairs(out)) for w, out in self.mb_branches]

    def _backward_and_step(self, n_images: int) -> float | None:
        self._gather_batch()
        self.strategy.after_forward(self)
        self.loss = self.strategy.criterion(self)
        self.strategy.before_backward(self)
        # heads' own terms (e.g. CRT's diversity), after the strategy's: the student's forward of the
        # batch recorded them once; the strategy's extra passes through the student's heads
        # (distillation under old attributes) record them again, and those copies are dropped
        clear_auxiliary(self.model)
        if self.mb_aux is not None:
            self.loss = self.loss + self.mb_aux
        where = (self.increment.index, self.epoch, self.step_in_epoch)
        if not self.loss_readback.deferred:   # read at once: a non-finite loss never reaches the weights
            self.loss_readback.push(self.loss, where)
        self.optimizer.zero_grad(set_to_none=True)
        self.loss.backward()
        self.dist.average_gradients(self.model.parameters())
        self.strategy.after_backward(self)
        self.strategy.before_update(self)
        self.optimizer.step()
        self.dist.broadcast_buffers(self.model)
        self.strategy.after_update(self)
        self.iteration += 1
        self.cost.add_training_step(n_images)
        self.strategy.after_training_iteration(self)
        if self.loss_readback.deferred:       # queued behind the whole step; the previous one is read
            self.loss_readback.push(self.loss, where)
        return self.loss_readback.latest

    # ------------------------------------------------------------------ evaluation

    def store_centroids(self) -> None:
        """Class centroids of the tasks trained in this increment, kept frozen afterwards
        (for MODC's prioritised retrieval, docs/metrics.md): the strategy's own when it keeps some (MODC's online
        centroids), else the class means of their labelled training images ("stored")."""
        own = self.strategy.class_centroids(self)
        self.task_centroids.update(own if own is not None else self.class_means(self.strategy.training_increments(self)))

    @torch.inference_mode()
    def class_means(self, increments: list[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """attribute -> (unit-norm mean embedding of each value's labelled training images,
        un-augmented, under the current model (values x D); which values have images).
        All attributes in one loader pass; under torchrun each rank embeds a share of the
        images (as evaluation does)."""
        dataset, table = self.scenario.training_data(increments)
        view = untransformed_view(dataset)
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        out = {}
        try:
            attributes = sorted(set(table.attributes.tolist()))
            rows_of = {a: np.flatnonzero(table.attributes == a) for a in attributes}
            embedded = embed_under_attributes(self.model, [(Subset(view, rows_of[a].tolist()), a) for a in attributes],
                                              self.setup, self.cfg.eval.batch_size, self.num_workers, self.dist,
                                              on_wait=self.cost.add_data_wait)
            for a, emb in zip(attributes, embedded):
                rows = rows_of[a]
                values = torch.as_tensor(table.values[rows], device=self.setup.device)
                num_values = self.scenario.meta.num_values[a]
                means = torch.zeros(num_values, emb.shape[1], device=emb.device)
                valid = torch.zeros(num_values, dtype=torch.bool)
                for v in torch.unique(values).tolist():
                    means[v] = F.normalize(emb[values == v].mean(dim=0), dim=0)
                    valid[v] = True
                out[a] = (means.cpu(), valid)
                self.cost.add_forward_only(len(rows), all_ranks=True)
        finally:
            for m, mode in modes.items():
                m.training = mode
        return out

    def evaluate_increment(self, inc: Increment) -> dict:
        self.strategy.before_eval(self)
        start = time.perf_counter()
        tasks = [self.scenario.eval_tasks[a] for a in self.scenario.seen_tasks(inc.index)]
        results, images = evaluate_tasks(self.model, tasks, self.setup, self.cfg.eval, self.num_workers,
                                         centroids=self.task_centroids, dist=self.dist)
        self.cost.current.eval_seconds += time.perf_counter() - start
        self.cost.current.eval_images += images
        self.strategy.after_eval(self)
        return results

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "strategy": self.strategy.state_dict(),
            "iteration": self.iteration,
            "division": self.division.state_dict() if self.division is not None else None,
            "task_centroids": self.task_centroids,
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
        self.strategy.load_state_dict(state["strategy"], self)
        self.iteration = int(state["iteration"])
        if self.division is not None and state.get("division") is not None:
            self.division.load_state_dict(state["division"])
        self.task_centroids = dict(state.get("task_centroids") or {})
