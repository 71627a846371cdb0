"""``mpnn-train``: train a model on prepared graph records, single process or with Horovod.

Runs unchanged as one process (``mpnn-train --data ...``) and as K data-parallel ranks
(``horovodrun -np K mpnn-train ...``, ``mpirun``, ``srun``). The shape follows Horovod's
Keras example: init and device pinning, learning rate scaled by the global batch with
warm-up, `hvd.DistributedOptimizer` (one fused allreduce per step), broadcast of rank 0's
initial weights, averaged metrics, and only rank 0 writing files and showing progress.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import sys
import time
from typing import Sequence

import horovod.tensorflow.keras as hvd
import numpy as np
import psutil
import tensorflow as tf

from mpnn import checkpoint, cli_checks, distributed, elastic, models, rundir, verify
from mpnn.batch_cut import cut_batch_trainer
from mpnn.callbacks import (
    AverageNonTrainableVariables,
    EpochLog,
    PeakMemory,
    RawWeightsBack,
    TimeBudget,
    WeightAverage,
    cosine_multiplier,
)
from mpnn.config import RESOLVED_THREAD_PLAN, TrainConfig, build_parser, config_from_args
from mpnn.data import LoaderOptions, Manifest, cache_bytes_estimate, manifest_dataset
from mpnn.evaluate import (
    group_mean_baseline_mae,
    predict_split,
    split_report,
    split_targets,
    write_predictions_csv,
)
from mpnn.report import format_summary

log = logging.getLogger("mpnn-train")

AUTOTUNE_LOG = "autotune.csv"  # in the run directory (--autotune)
TENSORBOARD_DIRECTORY = "tensorboard"  # in the run directory (--tensorboard)

LOSSES = {
    "mae": tf.keras.losses.MeanAbsoluteError,
    "mse": tf.keras.losses.MeanSquaredError,
    "huber": tf.keras.losses.Huber,
}


def make_callbacks(
    config: TrainConfig,
    run_dir: str,
    scaled_lr: float,
    steps: int,
    graphs_per_epoch: int,
    monitor: str,
    state: checkpoint.TrainingState,
    ema_momentum: float = 0.0,
) -> list[tf.keras.callbacks.Callback]:
    """Horovod's callbacks first (broadcast, metric averaging, warm-up, schedule), then the
    stopping rules, the weight average (`ema_momentum` > 0), then rank 0's logging and
    checkpoints, and last the resumable state
    (see `mpnn.checkpoint`), which starts from `state`. `monitor` is the loss that decides
    plateaus, early stopping and the best checkpoint (``val_loss``, or ``loss`` without a
    validation set)."""
    callbacks: list[tf.keras.callbacks.Callback] = [
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        hvd.callbacks.MetricAverageCallback(),
        AverageNonTrainableVariables(),
        PeakMemory(),  # after the averaging: the largest rank's peak, not the mean
    ]
    if config.warmup_epochs > 0:
        callbacks.append(
            hvd.callbacks.LearningRateWarmupCallback(
                initial_lr=scaled_lr, warmup_epochs=config.warmup_epochs, steps_per_epoch=steps
            )
        )
    if config.lr_decay == "cosine":
        callbacks.append(
            hvd.callbacks.LearningRateScheduleCallback(
                initial_lr=scaled_lr,
                multiplier=cosine_multiplier(config.epochs, config.warmup_epochs, config.min_lr_fraction),
                start_epoch=config.warmup_epochs,
                staircase=False,
                steps_per_epoch=steps,
            )
        )
    elif config.lr_decay == "plateau":
        callbacks.append(tf.keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=5))
    callbacks.append(tf.keras.callbacks.TerminateOnNaN())
    if config.early_stopping_patience > 0:
        callbacks.append(tf.keras.callbacks.EarlyStopping(monitor=monitor, patience=config.early_stopping_patience))
    if config.max_train_seconds > 0:
        callbacks.append(TimeBudget(config.max_train_seconds, spent_before=state.train_seconds))
    # The weight average is swapped in for validation and the checkpoints (which follow it)
    # and swapped out again after them (`RawWeightsBack`), before the resumable state.
    average = WeightAverage(ema_momentum) if ema_momentum > 0 else None
    if average is not None:
        callbacks.append(average)
    if distributed.is_root():
        checkpoints = checkpoint.checkpoint_directory(run_dir)
        callbacks += [
            EpochLog(graphs_per_epoch),
            # A resumed run appends to the log that `checkpoint.trim_log` cut at its epoch.
            tf.keras.callbacks.CSVLogger(os.path.join(run_dir, "log.csv"), append=state.epochs_done > 0),
            tf.keras.callbacks.ModelCheckpoint(
                os.path.join(checkpoints, "best.weights.h5"),
                monitor=monitor,
                save_best_only=True,
                save_weights_only=True,
            ),
            tf.keras.callbacks.ModelCheckpoint(os.path.join(checkpoints, "last.weights.h5"), save_weights_only=True),
        ]
        if config.tensorboard:
            callbacks.append(
                tf.keras.callbacks.TensorBoard(os.path.join(run_dir, TENSORBOARD_DIRECTORY), write_graph=False)
            )
    if average is not None:
        callbacks.append(RawWeightsBack(average))
    callbacks.append(checkpoint.SaveTrainingState(run_dir, state, callbacks))
    return callbacks


def train(config: TrainConfig) -> dict | None:
    """Train and evaluate; returns the metrics on rank 0 (None on other ranks).

    Writes the run directory (see `mpnn.rundir`) on rank 0.
    """
    config.validate()
    # Horovod opens its autotuning log when it starts, so the run directory is chosen (rank
    # 0's choice wins below) and made first.
    if config.autotune:
        config.run_dir = config.run_dir or rundir.default_run_dir()
        os.makedirs(config.run_dir, exist_ok=True)
    threads = distributed.init(
        config.intra_op_threads,
        config.inter_op_threads,
        config.batch_cut,
        timeline=config.horovod_timeline,
        autotune_log=os.path.join(config.run_dir, AUTOTUNE_LOG) if config.autotune else "",
    )
    tf.keras.utils.set_random_seed(config.seed)
    manifest = Manifest.load(config.data)
    verify.check_shards(config.data, manifest.splits)
    model_name = models.choose_model(config.model, manifest)
    # The cut this model takes (`models.CUTTABLE`); the plan as it is run goes to config.json.
    batch_cut = models.batch_cut_for(model_name, threads.batch_cut)
    threads = dataclasses.replace(threads, batch_cut=batch_cut)
    ranks, rank = distributed.size(), distributed.rank()
    cli_checks.check_batch_split(config.batch_size, config.batch_strategy, ranks)
    run_dir = elastic.rank0_value(config.run_dir or rundir.default_run_dir(), "run_dir", config.elastic)
    config.run_dir = run_dir
    if distributed.is_root():
        os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
        # The settings, and beside them the thread plan rank 0 resolved from them on this
        # machine (a resumed run plans again for its own machine).
        resolved = {RESOLVED_THREAD_PLAN: dataclasses.asdict(threads)}
        rundir.write_json(os.path.join(run_dir, "config.json"), {**config.to_json(), **resolved})
        rundir.write_json(os.path.join(run_dir, "host_info.json"), rundir.host_info(ranks, hvd.local_size()))

    batch = distributed.per_rank_batch_size(config.batch_size, config.batch_strategy, ranks)
    loader = LoaderOptions(
        parallel_reads=config.parallel_reads,
        parallel_calls=config.parallel_calls,
        shuffle_buffer=config.shuffle_buffer,
        cache=config.cache and cache_fits(manifest, rank, ranks, config.cache_budget_gb),
        threads=config.data_threads or distributed.shared_node_threads(),
    )
    scaled_lr = distributed.scaled_learning_rate(
        config.learning_rate, batch * ranks, config.batch_size, config.lr_scaling
    )
    defaults = models.TRAINING_DEFAULTS[model_name]
    loss = defaults["loss"] if config.loss == "auto" else config.loss
    weight_decay = defaults["weight_decay"] if config.weight_decay is None else config.weight_decay
    ema_momentum = defaults["ema_momentum"] if config.ema_momentum is None else config.ema_momentum
    architecture = models.model_config(model_name, config.model_options)
    model = models.build_from_manifest(model_name, architecture, manifest)
    # Training runs the model's twin that cuts batches for this rank's threads; the model
    # itself, the same on every machine, is what is checkpointed, evaluated and saved.
    trainer = cut_batch_trainer(model, batch_cut)
    optimizer = distributed.distributed_optimizer(make_optimizer(scaled_lr, weight_decay))
    trainer.compile(optimizer=optimizer, loss=LOSSES[loss](), metrics=["mae"])
    state = resume_or_start(config, run_dir, trainer)
    start_epoch, seconds_before = state.epochs_done, state.train_seconds
    start_seed = state.seeds[str(start_epoch)]
    tf.keras.utils.set_random_seed(start_seed)
    splits = [s for s in ("valid", "test") if manifest.split_records(s) >= ranks]
    if "valid" not in splits:
        log.warning("no validation set (fewer records than ranks): best checkpoint and stopping follow the loss")
    monitor = "val_loss" if "valid" in splits else "loss"

    def fit_data(rank: int, ranks: int) -> tuple[tf.data.Dataset, int, tf.data.Dataset | None, int | None]:
        """Training data and steps, validation data and steps, of rank `rank` of `ranks`."""
        common = dict(rank=rank, size=ranks, options=loader)
        # Repeated, so that Keras takes exactly `steps` batches (one pass) per epoch.
        train_data, train_steps = manifest_dataset(
            manifest, "train", batch, shuffle=True, seed=start_seed + rank, **common
        )
        train_data = only_model_inputs(train_data, model).repeat()
        if "valid" not in splits:
            return train_data, train_steps, None, None
        valid_data, valid_steps = manifest_dataset(manifest, "valid", batch, **common)
        return train_data, train_steps, only_model_inputs(valid_data, model).repeat(), valid_steps

    train_data, train_steps, valid_data, valid_steps = fit_data(rank, ranks)

    graphs_per_epoch = manifest.split_records("train")
    if distributed.is_root():
        log.info(
            "%s, %d parameters; %d rank(s), %d graphs per rank-batch (%s) cut into %d, global batch %d, "
            "learning rate %.3g",
            model_name, model.count_params(), ranks, batch, config.batch_strategy, threads.batch_cut, batch * ranks,
            scaled_lr,
        )

    started = time.perf_counter()
    if config.elastic:  # also when nothing is left: every rank must reach the sync

        def fit_arguments(rank: int, ranks: int, training: checkpoint.TrainingState) -> dict:
            data, steps, valid, valid_steps = fit_data(rank, ranks)
            callbacks = make_callbacks(
                config, run_dir, scaled_lr, steps, graphs_per_epoch, monitor, training, ema_momentum
            )
            return dict(x=data, steps_per_epoch=steps, validation_data=valid, validation_steps=valid_steps,
                        callbacks=callbacks, verbose=config.verbose if rank == 0 else 0)

        state = elastic.fit(trainer, state, config.epochs, fit_arguments)
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
            callbacks=make_callbacks(
                config, run_dir, scaled_lr, train_steps, graphs_per_epoch, monitor, state, ema_momentum
            ),
            verbose=config.verbose if distributed.is_root() else 0,
        )
    train_seconds = seconds_before + time.perf_counter() - started

    # Data parallelism keeps one model: after training every rank must hold the same weights.
    final_checksums = distributed.allgather_object(weights_checksum(model), "weights_checksum")
    restore_best_weights(model, os.path.join(run_dir, "checkpoints", "best.weights.h5"))
    results = {split: predict_split(model, manifest, split, batch) for split in splits}
    if not distributed.is_root():
        return None
    save_for_inference(model, os.path.join(run_dir, "model.keras"))
    metrics = {
        "target": dataclasses.asdict(manifest.target),
        **{split: split_report(predictions, manifest.group_name) for split, predictions in results.items()},
        "epochs_run": state.epochs_done,
        "train_seconds": train_seconds,
        "resumed_from_epoch": state.resumed_from_epoch,
        "ranks": ranks,
        "batch_per_rank": batch,
        "global_batch": batch * ranks,
        "learning_rate": scaled_lr,
        "model": model_name,
        "architecture": architecture.to_json(),
        "loss": loss,
        "ema_momentum": ema_momentum,
        "parameters": model.count_params(),
        "weights_identical_across_ranks": len(set(final_checksums)) == 1,
    }
    if "test" in results:
        train_targets = split_targets(manifest, "train")
        metrics["baselines"] = {"test_mae_of_group_mean": group_mean_baseline_mae(train_targets, results["test"])}
        write_predictions_csv(
            os.path.join(run_dir, "test_predictions.csv"), results["test"], manifest.group_name or "group"
        )
    rundir.write_json(os.path.join(run_dir, "metrics.json"), metrics)
    return metrics


def resume_or_start(config: TrainConfig, run_dir: str, model: tf.keras.Model) -> checkpoint.TrainingState:
    """The state training starts from: the run directory's latest checkpoint (loaded into
    `model` on every rank) with ``--resume``, else a fresh state. Records the seed of this
    (re)start, derived from the configured seed and the start epoch."""
    state = checkpoint.restore(run_dir, model, collective=not config.elastic) if config.resume else None
    if state is None:
        if config.resume and distributed.is_root():
            log.info("--resume: no checkpoint in %s, starting from epoch 0", run_dir)
        elif distributed.is_root() and checkpoint.has_checkpoint(run_dir):
            log.warning("%s holds a checkpoint; training starts afresh (pass --resume to continue it)", run_dir)
        state = checkpoint.TrainingState()
    else:
        state.resumed_from_epoch.append(state.epochs_done)
        if distributed.is_root():
            log.info("resuming %s after epoch %d", run_dir, state.epochs_done)
            checkpoint.trim_log(os.path.join(run_dir, "log.csv"), state.epochs_done)
    start_seed = np.random.SeedSequence([config.seed, state.epochs_done]).generate_state(1)[0]
    state.seeds[str(state.epochs_done)] = int(start_seed % 2**31)
    return state


def only_model_inputs(dataset: tf.data.Dataset, model: tf.keras.Model) -> tf.data.Dataset:
    """Drop the batch features `model` does not take (records may carry more)."""
    return dataset.map(lambda inputs, target: (models.model_inputs(model, inputs), target))


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


def save_for_inference(model: tf.keras.Model, path: str) -> None:
    """Save architecture and weights of `model`, which must be uncompiled (`train` compiles
    its training twin, `mpnn.batch_cut.cut_batch_trainer`, not the model), so the file holds
    no (Horovod-wrapped) optimizer and loads anywhere with `mpnn.models.load_model`."""
    if getattr(model, "optimizer", None) is not None:
        raise ValueError(f"save_for_inference: model {model.name!r} is compiled; save the uncompiled model")
    model.save(path)


def cache_fits(manifest: Manifest, rank: int, ranks: int, budget_gb: float) -> bool:
    """Whether this rank's share of the training records fits its cache budget: `budget_gb`
    GB, or with 0 half of the memory available now, shared by the node's ranks. Logs why
    when it does not (the loader then reads the records from disk every epoch)."""
    budget = budget_gb * 1e9 if budget_gb > 0 else 0.5 * psutil.virtual_memory().available / hvd.local_size()
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


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cli_checks.check_ranges(vars(build_parser().parse_args(argv)))  # names the flag
        config = config_from_args(argv)
        cli_checks.check_ranges({**config.to_json(), **config.model_options})  # and --config's values
        cli_checks.check_elastic(config.elastic, config.run_dir)
    except (ValueError, OSError) as exc:
        print(f"mpnn-train: error: {exc}", file=sys.stderr)
        return 2

    def train_and_report() -> int:
        cli_checks.check_data_path(config.data)
        metrics = train(config)
        if metrics is not None:
            print(format_summary(metrics, config.run_dir))
        return 0

    return cli_checks.run("mpnn-train", train_and_report, config.data)


if __name__ == "__main__":
    sys.exit(main())
