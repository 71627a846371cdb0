"""Training as a library: `train(config) -> RunResult`, single process or data-parallel.

Runs unchanged as one process and as K data-parallel ranks on either engine
(`mpnn.engines`: Horovod under ``horovodrun -np K``, ``mpirun``, ``srun``; tf.distribute
under ``mpnn-launch``); ``mpnn-train`` (`mpnn.cli.train`) is its command-line shell, and the
notebooks, benchmarks and tests call `train` directly. The shape follows Horovod's Keras
example: init and device pinning, learning rate scaled by the global batch with warm-up,
an optimizer that averages the gradients over the ranks, rank 0's initial weights on every
rank, averaged metrics, and only rank 0 writing files and showing progress; the engine
supplies each of these (`mpnn.distributed`).

`train` runs these steps in order, each a function below: `start` (threads, seed, run
directory), `plan_run` (model family, batch, learning rate, loader, evaluated splits),
`write_run_files`, `build_trainer`, `resume_or_start`, `fit`, `weights_identical_across_ranks`,
`evaluate`, `write_results`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from mpnn import atomic, checkpoint, distributed, forces, host, models, run_lock, rundir, verify
from mpnn.atomic import write_json
from mpnn.batch_cut import cut_batch_trainer
from mpnn.callbacks import (
    AverageNonTrainableVariables,
    CsvLog,
    EpochLog,
    PeakMemory,
    RawWeightsBack,
    TimeBudget,
    WeightAverage,
    cosine_multiplier,
)
from mpnn.config import RESOLVED_ENGINE, RESOLVED_THREAD_PLAN, LrDecay, TrainConfig
from mpnn.data import LoaderOptions, Manifest, cache_bytes_estimate, manifest_dataset
from mpnn.divergence import StopOnDivergence
from mpnn.evaluate import (
    check_records_fit,
    group_mean_baseline_mae,
    predict_split,
    split_metrics,
    split_targets,
    write_predictions_csv,
)
from mpnn.predictions import Predictions

log = logging.getLogger("mpnn-train")

# The Keras loss of each `mpnn.config.Loss` value (``auto`` resolves to the family's).
LOSS_CLASSES: dict[str, Callable[[], tf.keras.losses.Loss]] = {
    "mae": tf.keras.losses.MeanAbsoluteError,
    "mse": tf.keras.losses.MeanSquaredError,
    "huber": tf.keras.losses.Huber,
}


@dataclass(frozen=True)
class RunResult:
    """What a training run gives back (every rank gets one).

    Attributes:
        run_dir: the run directory (rank 0 wrote it; see `mpnn.rundir`).
        metrics: the content of ``metrics.json`` on rank 0; None on the other ranks,
            which evaluate but write nothing.
        epochs_run: epochs done in all, counting those of runs this one resumed.
        train_seconds: seconds of training (fit only), counting resumed runs'.
    """

    run_dir: str
    metrics: dict[str, Any] | None
    epochs_run: int
    train_seconds: float


@dataclass(frozen=True)
class RunPlan:
    """What `train` derives from the configuration, the manifest and the ranks before it
    builds anything.

    Attributes:
        model_name: the model family (`mpnn.models.FAMILIES`).
        architecture: the family's options dataclass.
        loss, weight_decay, ema_momentum: as trained (the family's defaults where the
            config has none).
        threads: the thread plan as run (its batch cut 1 for families that take none).
        rank, ranks: this process's rank and the rank count.
        batch: graphs per rank-batch.
        learning_rate: the base rate scaled for the global batch.
        loader: this rank's loader settings.
        splits: the splits evaluated (``valid``, ``test``: those with at least one record
            per rank).
    """

    model_name: str
    architecture: Any
    loss: str
    weight_decay: float
    ema_momentum: float
    threads: distributed.ThreadPlan
    rank: int
    ranks: int
    batch: int
    learning_rate: float
    loader: LoaderOptions
    splits: tuple[str, ...]

    @property
    def monitor(self) -> str:
        """The loss that decides plateaus, early stopping and the best checkpoint."""
        return "val_loss" if "valid" in self.splits else "loss"


def train(config: TrainConfig) -> RunResult:
    """Train and evaluate as `config` says; rank 0 writes the run directory (see
    `mpnn.rundir`). `config` is not changed (the run directory chosen, when it has none,
    is in the result)."""
    config.validate()
    config, threads = start(config)
    manifest = Manifest.load(config.data)
    verify.check_shards(config.data, manifest.splits)
    plan = plan_run(config, manifest, threads)
    config = dataclasses.replace(
        config, run_dir=distributed.rank0_value(config.run_dir or rundir.default_run_dir(), "run_dir", config.elastic)
    )
    with run_lock.holding(config.run_dir, distributed.is_root(), share=not config.elastic) as lock:
        write_run_files(config, plan)
        model, trainer = build_trainer(plan, manifest)
        state = resume_or_start(config, config.run_dir, trainer, plan.learning_rate)
        state, train_seconds = fit(config, plan, manifest, model, trainer, state, lock)
        identical = None if config.elastic else weights_identical_across_ranks(model)  # no collectives: see evaluate
        results = evaluate(config, plan, manifest, model)
        metrics = write_results(config, plan, manifest, model, results, state, train_seconds, identical)
    return RunResult(config.run_dir, metrics, state.epochs_done, train_seconds)


def start(config: TrainConfig) -> tuple[TrainConfig, distributed.ThreadPlan]:
    """Start the engine and TensorFlow's threads (`mpnn.distributed.init`) and seed every
    generator with ``config.seed``. Horovod opens its autotuning log when it starts, so
    with ``autotune`` the run directory is chosen (rank 0's choice wins later) and made
    first: the config returned has it."""
    if config.autotune:
        config = dataclasses.replace(config, run_dir=config.run_dir or rundir.default_run_dir())
        os.makedirs(config.run_dir, exist_ok=True)
    threads = distributed.init(
        config.intra_op_threads,
        config.inter_op_threads,
        config.batch_cut,
        timeline=config.horovod_timeline,
        autotune_log=os.path.join(config.run_dir, rundir.AUTOTUNE_LOG) if config.autotune else "",
        engine=config.engine,
    )
    tf.keras.utils.set_random_seed(config.seed)
    return config, threads


def plan_run(config: TrainConfig, manifest: Manifest, threads: distributed.ThreadPlan) -> RunPlan:
    """Resolve the settings left to the data, the model family and the ranks (see `RunPlan`).

    Raises:
        mpnn.errors.UsageError: a global batch that does not split across the ranks.
        mpnn.errors.InputError: ``--resume`` of a run trained on records of another kind or
            vocabularies than `manifest`'s.
    """
    if config.resume:
        trained_on = rundir.RunDir(config.run_dir).manifest()  # None: nothing to resume, or unreadable
        if trained_on is not None:
            check_records_fit(config.run_dir, trained_on.kind, trained_on.vocab, manifest)
    model_name = models.choose_model(config.family, manifest)
    models.check_data(model_name, manifest)  # before the run directory is written
    family = models.family(model_name)
    ranks, rank = distributed.size(), distributed.rank()
    distributed.check_batch_split(config.batch_size, config.batch_strategy, ranks)
    batch = distributed.per_rank_batch_size(config.batch_size, config.batch_strategy, ranks)
    loader = LoaderOptions(
        parallel_reads=config.parallel_reads,
        parallel_calls=config.parallel_calls,
        shuffle_buffer=config.shuffle_buffer,
        cache=config.cache and cache_fits(manifest, rank, ranks, config.cache_budget_gb),
        threads=config.data_threads or distributed.shared_node_threads(),
    )
    splits = tuple(s for s in ("valid", "test") if manifest.split_records(s) >= ranks)
    if "valid" not in splits:
        log.warning("no validation set (fewer records than ranks): best checkpoint and stopping follow the loss")
    return RunPlan(
        model_name=model_name,
        architecture=models.model_config(model_name, config.model_options),
        loss=family.loss if config.loss == "auto" else config.loss,
        weight_decay=family.weight_decay if config.weight_decay is None else config.weight_decay,
        ema_momentum=family.ema_momentum if config.ema_momentum is None else config.ema_momentum,
        # The cut this family takes; the plan as it is run goes to config.json.
        threads=dataclasses.replace(threads, batch_cut=models.batch_cut_for(model_name, threads.batch_cut)),
        rank=rank,
        ranks=ranks,
        batch=batch,
        learning_rate=distributed.scaled_learning_rate(
            config.learning_rate, batch * ranks, config.batch_size, config.lr_scaling
        ),
        loader=loader,
        splits=splits,
    )


def write_run_files(config: TrainConfig, plan: RunPlan) -> None:
    """On rank 0: make the run directory and write ``config.json`` (the settings, with every
    architecture option in ``model_options``, defaults included, so that a resumed run
    rebuilds its own model whatever the defaults have become since; and beside them the
    thread plan rank 0 resolved on this machine, which a resumed run plans again for its
    own machine) and ``host_info.json``."""
    if not distributed.is_root():
        return
    with atomic.naming(checkpoint.checkpoint_directory(config.run_dir)):
        os.makedirs(checkpoint.checkpoint_directory(config.run_dir), exist_ok=True)
    settings = {**config.to_json(), "model_options": dataclasses.asdict(plan.architecture)}
    resolved = {RESOLVED_THREAD_PLAN: dataclasses.asdict(plan.threads), RESOLVED_ENGINE: stack()}
    write_json(os.path.join(config.run_dir, rundir.CONFIG_FILE), {**settings, **resolved})
    host_info = host.host_info(plan.ranks, distributed.local_size(), distributed.engine().versions())
    write_json(os.path.join(config.run_dir, rundir.HOST_INFO_FILE), host_info)


def stack() -> dict[str, str]:
    """The engine this run trains with and the TensorFlow and Keras under it (as recorded
    in ``config.json`` and ``metrics.json``)."""
    return {"name": distributed.engine_name(), "tensorflow": tf.__version__, "keras": host.keras_version()}


def build_trainer(plan: RunPlan, manifest: Manifest) -> tuple[tf.keras.Model, tf.keras.Model]:
    """The model (the same on every machine: it is checkpointed, evaluated and saved) and
    its compiled training twin, which cuts batches for this rank's threads; both built in
    the engine's scope (`mpnn.distributed.scope`). Every variable of the trainer exists
    before ``fit`` (the optimizer's: `mpnn.batch_cut.CutBatchTrainer.compile`)."""
    with distributed.scope():
        model = models.build_from_manifest(plan.model_name, plan.architecture, manifest)
        optimizer = distributed.distributed_optimizer(make_optimizer(plan.learning_rate, plan.weight_decay))
        if forces.takes_positions(model):
            # Energies per atom and forces (`mpnn.forces`); its own metrics.
            trainer = forces.force_trainer(model, plan.threads.batch_cut, plan.architecture.force_weight)
            trainer.compile(optimizer=optimizer, loss=LOSS_CLASSES[plan.loss]())
            return model, trainer
        trainer = cut_batch_trainer(model, plan.threads.batch_cut)
        # A metric object, not the string "mae": Keras makes a string's metric (and its
        # variables) inside the first training step, which is then traced twice.
        mae = tf.keras.metrics.MeanAbsoluteError(name="mae")
        trainer.compile(optimizer=optimizer, loss=LOSS_CLASSES[plan.loss](), metrics=[mae])
    return model, trainer


def resume_or_start(
    config: TrainConfig, run_dir: str, model: tf.keras.Model, learning_rate: float | None = None
) -> checkpoint.TrainingState:
    """The state training starts from: the run directory's latest checkpoint (loaded into
    `model` on every rank) with ``--resume``, else a fresh state. Records the seed of this
    (re)start, derived from the configured seed and the start epoch. A resumed state
    continues at `learning_rate` (this run's scaled rate) when it differs from the one it
    was trained with (`mpnn.checkpoint.take_new_learning_rate`)."""
    with distributed.scope():  # the optimizer's variables are created here
        state = checkpoint.restore(run_dir, model, collective=not config.elastic) if config.resume else None
    if state is None:
        if config.resume and distributed.is_root():
            log.info("--resume: no checkpoint in %s, starting from epoch 0", run_dir)
        elif distributed.is_root() and checkpoint.has_checkpoint(run_dir):
            log.warning("%s holds a checkpoint; training starts afresh (pass --resume to continue it)", run_dir)
        state = checkpoint.TrainingState()
    else:
        if learning_rate is not None:
            checkpoint.take_new_learning_rate(state, learning_rate)
        state.resumed_from_epoch.append(state.epochs_done)
        if distributed.is_root():
            log.info("resuming %s after epoch %d", run_dir, state.epochs_done)
            checkpoint.trim_log(os.path.join(run_dir, rundir.LOG_FILE), state.epochs_done)
    start_seed = np.random.SeedSequence([config.seed, state.epochs_done]).generate_state(1)[0]
    state.seeds[str(state.epochs_done)] = int(start_seed % 2**31)
    return state


def fit_data(
    plan: RunPlan, manifest: Manifest, model: tf.keras.Model, seed: int, rank: int, ranks: int
) -> tuple[tf.data.Dataset, int, tf.data.Dataset | None, int | None]:
    """Training data and steps, validation data and steps (None without a validation set)
    of rank `rank` of `ranks`; the training data shuffled from `seed` + `rank`. Both
    repeat, so that Keras takes exactly `steps` batches (one pass) per epoch, and go to
    ``fit`` as the engine takes them (`mpnn.distributed.distribute`: this rank's share,
    never re-sharded)."""
    entries = models.batch_entries(model.input_names, manifest)
    common = dict(rank=rank, size=ranks, options=plan.loader, entries=entries)
    train_data, train_steps = manifest_dataset(
        manifest, "train", plan.batch, shuffle=True, seed=seed + rank, **common
    )
    train_data = distributed.distribute(models.only_model_inputs(train_data, model).repeat())
    if "valid" not in plan.splits:
        return train_data, train_steps, None, None
    valid_data, valid_steps = manifest_dataset(manifest, "valid", plan.batch, **common)
    return train_data, train_steps, distributed.distribute(models.only_model_inputs(valid_data, model).repeat()), valid_steps


def fit(
    config: TrainConfig,
    plan: RunPlan,
    manifest: Manifest,
    model: tf.keras.Model,
    trainer: tf.keras.Model,
    state: checkpoint.TrainingState,
    lock: run_lock.RunLock | None = None,
) -> tuple[checkpoint.TrainingState, float]:
    """Train `trainer` from `state` to ``config.epochs`` (elastically with ``--elastic``);
    returns the final state and the training seconds, counting those of resumed runs.
    Under ``--elastic`` the worker that is rank 0 at each (re)start holds the run
    directory's `lock` (`mpnn.run_lock.RunLock.ensure`)."""
    start_epoch, seconds_before = state.epochs_done, state.train_seconds
    start_seed = state.seeds[str(start_epoch)]
    tf.keras.utils.set_random_seed(start_seed)
    train_data, train_steps, valid_data, valid_steps = fit_data(
        plan, manifest, model, start_seed, plan.rank, plan.ranks
    )
    graphs_per_epoch = manifest.split_records("train")
    if distributed.is_root():
        log.info(
            "%s, %d parameters; %d rank(s), %d graphs per rank-batch (%s) cut into %d, global batch %d, "
            "learning rate %.3g",
            plan.model_name, model.count_params(), plan.ranks, plan.batch, config.batch_strategy,
            plan.threads.batch_cut, plan.batch * plan.ranks, plan.learning_rate,
        )

    started = time.perf_counter()
    if config.elastic:  # also when nothing is left: every rank must reach the sync

        def fit_arguments(rank: int, ranks: int, training: checkpoint.TrainingState) -> dict:
            if rank == 0:
                if lock is not None:
                    lock.ensure()
                # Rows of epochs after the last commit (a lost rank 0 wrote them): trained again now.
                checkpoint.trim_log(os.path.join(config.run_dir, rundir.LOG_FILE), training.epochs_done)
                # The membership policy (mpnn.engines.horovod_elastic): per-rank batch and rate kept.
                log.info(
                    "elastic: %d rank(s) x %d graphs: global batch %d, learning rate %.3g (kept, not rescaled)",
                    ranks, plan.batch, ranks * plan.batch, plan.learning_rate,
                )
            data, steps, valid, valid_steps = fit_data(plan, manifest, model, start_seed, rank, ranks)
            callbacks = make_callbacks(config, plan, steps, graphs_per_epoch, training)
            return dict(x=data, steps_per_epoch=steps, validation_data=valid, validation_steps=valid_steps,
                        callbacks=callbacks, verbose=config.verbose if rank == 0 else 0)

        from mpnn.engines import horovod_elastic  # Horovod's: imported only where it runs

        state = horovod_elastic.fit(trainer, state, config.epochs, fit_arguments)
    elif state.stopped or start_epoch >= config.epochs:
        log.info("nothing left to train: %d of %d epochs done, stopped=%s", start_epoch, config.epochs, state.stopped)
    else:
        trainer.fit(
            train_data,
            epochs=config.epochs,
            initial_epoch=start_epoch,
            steps_per_epoch=train_steps,
            validation_data=valid_data,
            validation_steps=valid_steps,
            callbacks=make_callbacks(config, plan, train_steps, graphs_per_epoch, state),
            verbose=config.verbose if distributed.is_root() else 0,
        )
    return state, seconds_before + time.perf_counter() - started


def make_callbacks(
    config: TrainConfig,
    plan: RunPlan,
    steps: int,
    graphs_per_epoch: int,
    state: checkpoint.TrainingState,
) -> list[tf.keras.callbacks.Callback]:
    """The engine's callbacks first (broadcast and metric averaging where it needs them,
    warm-up, schedule), then the stopping rules, the weight average (``ema_momentum`` > 0), then rank 0's logging and
    checkpoints, and last the resumable state (see `mpnn.checkpoint`), which starts from
    `state`."""
    run_dir, scaled_lr, monitor = config.run_dir, plan.learning_rate, plan.monitor
    engine = distributed.engine()
    callbacks: list[tf.keras.callbacks.Callback] = [
        *engine.sync_callbacks(),
        AverageNonTrainableVariables(),
        PeakMemory(),  # after the averaging: the largest rank's peak, not the mean
    ]
    if config.warmup_epochs > 0:
        callbacks.append(engine.warmup_callback(scaled_lr, config.warmup_epochs, steps))
    if config.lr_decay == LrDecay.COSINE:
        multiplier = cosine_multiplier(config.epochs, config.warmup_epochs, config.min_lr_fraction)
        callbacks.append(engine.schedule_callback(scaled_lr, multiplier, config.warmup_epochs, steps))
    elif config.lr_decay == LrDecay.PLATEAU:
        callbacks.append(tf.keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=5))
    callbacks.append(StopOnDivergence(steps))  # before the checkpoints: a diverged epoch is never saved
    if config.early_stopping_patience > 0:
        callbacks.append(tf.keras.callbacks.EarlyStopping(monitor=monitor, patience=config.early_stopping_patience))
    if config.max_train_seconds > 0:
        callbacks.append(TimeBudget(config.max_train_seconds, spent_before=state.train_seconds))
    # The weight average is swapped in for validation and the checkpoints (which follow it)
    # and swapped out again after them (`RawWeightsBack`), before the resumable state.
    average = WeightAverage(plan.ema_momentum) if plan.ema_momentum > 0 else None
    if average is not None:
        callbacks.append(average)
    checkpoints = checkpoint.checkpoint_directory(run_dir)
    weight_files = [
        checkpoint.AtomicModelCheckpoint(
            os.path.join(checkpoints, "best.weights.h5"), monitor=monitor, save_best_only=True, save_weights_only=True
        ),
        checkpoint.AtomicModelCheckpoint(os.path.join(checkpoints, "last.weights.h5"), save_weights_only=True),
    ]
    if distributed.is_root():
        callbacks += [
            EpochLog(graphs_per_epoch),
            # A resumed run appends to the log that `checkpoint.trim_log` cut at its epoch.
            CsvLog(os.path.join(run_dir, rundir.LOG_FILE), append=state.epochs_done > 0),
            *weight_files,
        ]
        if config.tensorboard:
            callbacks.append(
                tf.keras.callbacks.TensorBoard(os.path.join(run_dir, rundir.TENSORBOARD_DIRECTORY), write_graph=False)
            )
    elif engine.saves_on_every_rank:
        # Under tf.distribute reading the compiled metrics' variables (which the weight files
        # hold) is a collective: every worker saves, the others into a scratch directory
        # that Keras' ModelCheckpoint removes again.
        callbacks += weight_files
    if average is not None:
        callbacks.append(RawWeightsBack(average))
    callbacks.append(checkpoint.SaveTrainingState(run_dir, state, callbacks, scaled_lr))
    return callbacks


def weights_identical_across_ranks(model: tf.keras.Model) -> bool:
    """Whether every rank holds the same weights (data parallelism keeps one model); every
    rank must call it (it gathers)."""
    return len(set(distributed.allgather_object(weights_checksum(model), "weights_checksum"))) == 1


def evaluate(config: TrainConfig, plan: RunPlan, manifest: Manifest, model: tf.keras.Model) -> dict[str, Predictions]:
    """Predictions of the best checkpoint's weights (the last weights without one) on the
    evaluated splits, on every rank. Under ``--elastic`` rank 0 predicts alone and the other
    ranks get nothing: the workers are outside the elastic loop now, where a collective
    would wait forever for a worker lost meanwhile, so losing any worker but rank 0's during
    the final evaluation changes nothing (see `mpnn.engines.horovod_elastic`)."""
    best = os.path.join(checkpoint.checkpoint_directory(config.run_dir), "best.weights.h5")
    if config.elastic:
        if not distributed.is_root():
            return {}
        if os.path.exists(best):
            model.load_weights(best)
        return {split: predict_split(model, manifest, split, plan.batch, alone=True) for split in plan.splits}
    restore_best_weights(model, best)
    return {split: predict_split(model, manifest, split, plan.batch) for split in plan.splits}


def write_results(
    config: TrainConfig,
    plan: RunPlan,
    manifest: Manifest,
    model: tf.keras.Model,
    results: dict[str, Predictions],
    state: checkpoint.TrainingState,
    train_seconds: float,
    weights_identical: bool | None,
) -> dict[str, Any] | None:
    """On rank 0: save ``model.keras``, ``metrics.json`` (returned; None on the other ranks)
    and with a test split ``test_predictions.csv``."""
    if not distributed.is_root():
        return None
    run_dir = config.run_dir
    with atomic.replacing(os.path.join(run_dir, rundir.MODEL_FILE), keep_suffix=True) as model_file:
        models.save_for_inference(model, model_file)
    metrics = {
        "target": dataclasses.asdict(manifest.target),
        **{split: split_metrics(predictions, manifest.group_name) for split, predictions in results.items()},
        "epochs_run": state.epochs_done,
        "train_seconds": train_seconds,
        "resumed_from_epoch": state.resumed_from_epoch,
        "ranks": plan.ranks,
        "batch_per_rank": plan.batch,
        "global_batch": plan.batch * plan.ranks,
        "learning_rate": plan.learning_rate,
        "model": plan.model_name,
        "architecture": plan.architecture.to_json(),
        "loss": plan.loss,
        "ema_momentum": plan.ema_momentum,
        "parameters": model.count_params(),
        "weights_identical_across_ranks": weights_identical,
        "engine": stack(),
    }
    if "test" in results:
        train_targets = split_targets(manifest, "train")
        metrics["baselines"] = {"test_mae_of_group_mean": group_mean_baseline_mae(train_targets, results["test"])}
        write_predictions_csv(
            os.path.join(run_dir, rundir.TEST_PREDICTIONS_FILE), results["test"], manifest.group_name or "group"
        )
    write_json(os.path.join(run_dir, rundir.METRICS_FILE), metrics)
    return metrics


def make_optimizer(learning_rate: float, weight_decay: float) -> tf.keras.optimizers.Optimizer:
    """Adam, or AdamW (decoupled weight decay) when `weight_decay` > 0."""
    if weight_decay > 0:
        return tf.keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    return tf.keras.optimizers.Adam(learning_rate)


def restore_best_weights(model: tf.keras.Model, path: str) -> None:
    """Load rank 0's best checkpoint (if any) and broadcast it, so every rank evaluates
    the same weights even where only rank 0 sees the file."""
    if distributed.is_root() and os.path.exists(path):
        model.load_weights(path)
    distributed.broadcast_variables(model.variables)


def cache_fits(manifest: Manifest, rank: int, ranks: int, budget_gb: float) -> bool:
    """Whether this rank's share of the training records fits its cache budget: `budget_gb`
    GB, or with 0 half of the memory available now, shared by the node's ranks. Logs why
    when it does not (the loader then reads the records from disk every epoch)."""
    budget = budget_gb * 1e9 if budget_gb > 0 else 0.5 * host.available_memory_bytes() / distributed.local_size()
    needed = cache_bytes_estimate(manifest, "train", rank, ranks)
    if needed <= budget:
        return True
    log.warning(
        "rank %d: cache off: its training records need about %.2f GB in memory, more than its budget of %.2f GB "
        "(--cache-budget-gb%s); records are read from disk every epoch",
        rank, needed / 1e9, budget / 1e9, "" if budget_gb > 0 else ": 0, half the available memory",
    )
    return False


def weights_checksum(model: tf.keras.Model) -> str:
    """sha256 of all weights, to compare models across ranks."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()
