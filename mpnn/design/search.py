"""``mpnn-design``: reward-guided search over hydrogen-bond networks (Algorithm 1 of the
ExaLearn design slides).

From a start network, pathways (sequences of networks, each one edit from the one before)
wait in a priority queue ordered by the reward of their last network (`mpnn.design.reward`).
Each step pops the best pathway and runs

- EXPLORE-NEXT: every one-step edit of its last network (`mpnn.design.edits`) not seen
  before (up to isomorphism, `WaterNetwork.key`), scored in ONE batched surrogate call; the
  `branching` (b) best extend the pathway and join the queue, which keeps the `beam` (B)
  best pathways;
- MATCH-TARGET: a new network with `target_waters` waters is a result; its pathway stays
  open for hydrogen-bond edits at that size (no more waters are added).

The search stops when the queue is empty or after `max_steps` steps, and returns the `top`
(K) best results. Example (the demo's model trained without distances)::

    mpnn-design --model runs/topology --start data/samples/water/minima/w5_lowest.xyz \\
        --target-waters 10 --branching 4 --beam 32 --top 5 -o design-out \\
        --reference data/samples/water/minima/w10_lowest.xyz
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field

from data_prep.structures import read_structures
from data_prep.water import WaterGraphError, water_graph
from mpnn import atomic, settings
from mpnn.design.edits import one_step_edits
from mpnn.design.graph import NetworkBatch, WaterNetwork
from mpnn.design.reward import PenaltyWeights, Reward, check_surrogate, score
from mpnn.errors import InputError, UsageError
from mpnn.predict import TrainedModel
from mpnn.settings import AT_LEAST_1, setting

log = logging.getLogger("mpnn-design")


@dataclass(frozen=True)
class SearchOptions:
    """Settings of `search` (see the module docstring and ``mpnn-design --help``)."""

    target_waters: int = setting(help="size of the networks to find", allowed=AT_LEAST_1)
    branching: int = setting(4, "b: edits kept per step (default 4)", AT_LEAST_1)
    beam: int = setting(32, "B: pathways kept open (default 32)", AT_LEAST_1)
    top: int = setting(5, "K: best networks to write (default 5)", AT_LEAST_1)
    max_steps: int = setting(100, "steps before stopping (default 100)", AT_LEAST_1)
    new_water_bonds: int = setting(2, "hydrogen bonds an added water may make at once (default 2)", AT_LEAST_1)
    weights: PenaltyWeights = field(default_factory=PenaltyWeights)

    def validate(self, start: WaterNetwork) -> None:
        """Raise `UsageError` naming the flag of a setting out of range, or a target
        smaller than the start."""
        settings.check(self)
        if self.target_waters < start.n_waters:
            raise UsageError(
                f"argument --target-waters: the start has {start.n_waters} waters, more than the target "
                f"{self.target_waters}"
            )


@dataclass(frozen=True)
class Found:
    """A network with its reward and the edits that led to it from the start."""

    network: WaterNetwork
    reward: Reward
    edits: tuple[str, ...]


@dataclass(frozen=True)
class StepLog:
    step: int
    open_pathways: int
    candidates: int
    seconds: float
    best_reward: float | None  # best result so far

    @property
    def candidates_per_second(self) -> float:
        return self.candidates / self.seconds if self.seconds > 0 else 0.0


@dataclass
class SearchResult:
    start: Found
    results: list[Found]  # the `top` best, best first
    steps: list[StepLog]
    seconds: float

    @property
    def candidates(self) -> int:
        return sum(s.candidates for s in self.steps)

    @property
    def scoring_seconds(self) -> float:
        return sum(s.seconds for s in self.steps)


def search(start: WaterNetwork, model: TrainedModel, options: SearchOptions) -> SearchResult:
    """Run Algorithm 1 from `start` with the surrogate `model` (see the module docstring).

    Raises:
        mpnn.errors.ModelError: a surrogate that needs coordinates.
        ValueError: invalid options.
    """
    options.validate(start)
    check_surrogate(model)
    began = time.perf_counter()
    first = Found(start, score([start], model, options.weights)[0], ())
    order = itertools.count()  # ties in the queue go to the older pathway
    queue = [(-first.reward.reward, next(order), first)]
    seen = {start.key()}
    results: dict[bytes, Found] = {}
    if start.n_waters == options.target_waters:
        results[start.key()] = first
    steps = []
    for step in range(1, options.max_steps + 1):
        if not queue:
            break
        _, _, pathway = heapq.heappop(queue)
        stamp = time.perf_counter()
        children, candidates = explore_next(pathway, model, options, seen)
        seconds = time.perf_counter() - stamp
        for child in children:
            key = child.network.key()
            if child.network.n_waters == options.target_waters:  # MATCH-TARGET
                results[key] = child
            heapq.heappush(queue, (-child.reward.reward, next(order), child))
        queue = heapq.nsmallest(options.beam, queue)  # a sorted list is a heap
        best = max((r.reward.reward for r in results.values()), default=None)
        steps.append(StepLog(step, len(queue), candidates, seconds, best))
        log.info(
            "step %d: %d pathways open, %d candidates scored in %.3f s (%.0f/s), best at %d waters: %s",
            step, len(queue), steps[-1].candidates, seconds, steps[-1].candidates_per_second,
            options.target_waters, "none yet" if best is None else f"{best:.3f}",
        )
    ranked = sorted(results.values(), key=lambda found: -found.reward.reward)[: options.top]
    return SearchResult(first, ranked, steps, time.perf_counter() - began)


def explore_next(
    pathway: Found, model: TrainedModel, options: SearchOptions, seen: set[bytes]
) -> tuple[list[Found], int]:
    """EXPLORE-NEXT: the `branching` best unseen one-step edits of the pathway's last
    network, scored in one surrogate call, and the number of candidates scored; marks the
    chosen ones seen."""
    edits = one_step_edits(pathway.network, options.target_waters, options.new_water_bonds)
    candidates, keys, fresh = [], [], set()
    for edit, key in zip(edits, NetworkBatch.of([edit.network for edit in edits]).keys()):
        if key not in seen and key not in fresh:
            candidates.append(edit)
            keys.append(key)
            fresh.add(key)
    if not candidates:
        return [], 0
    rewards = score([edit.network for edit in candidates], model, options.weights)
    best = sorted(range(len(candidates)), key=lambda index: -rewards[index].reward)[: options.branching]
    children = []
    for index in best:
        seen.add(keys[index])
        children.append(Found(candidates[index].network, rewards[index], (*pathway.edits, candidates[index].description)))
    return children, len(candidates)


def read_start(path: str) -> WaterNetwork:
    """The start network: a network JSON (`WaterNetwork.to_json`), or the first structure of
    a structure file, its graph built as ``mpnn-prep-water`` builds it.

    Raises:
        InputError: a file that gives no usable network (the message names it).
    """
    if path.endswith(".json"):
        with open(path) as handle:
            try:
                return WaterNetwork.from_json(json.load(handle))
            except (json.JSONDecodeError, ValueError) as exc:
                raise InputError(f"{path}: {exc}") from exc
    for structure in read_structures(path):
        if structure.atoms is None:
            raise InputError(f"{path}: {structure.error}")
        try:
            # The graph needs an energy; a placeholder when the file has none (never used).
            energy = structure.energy if structure.energy is not None else 0.0
            return WaterNetwork.from_graph(water_graph(structure.atoms, energy, structure.record_id))
        except WaterGraphError as exc:
            raise InputError(f"{path}: {exc}") from exc
    raise InputError(f"{path}: no structure in the file")


def write_results(
    result: SearchResult, options: SearchOptions, output: str, model: TrainedModel, reference: Found | None = None
) -> list[str]:
    """Write ``best-01.json``, ... (network, reward, energy, each penalty, the edits) and
    ``search.json`` (options, start, the `reference` network if any, per-step log, timing)
    to `output`; returns the paths."""
    os.makedirs(output, exist_ok=True)
    paths = []
    for rank, found in enumerate(result.results, start=1):
        path = os.path.join(output, f"best-{rank:02d}.json")
        found.network.save(path, **_scored(found, model), edits=list(found.edits))
        paths.append(path)
    summary = {
        "model": model.source,
        "units": model.units,
        "options": asdict(options),
        "start": found_to_json(result.start, model),
        "reference": None if reference is None else found_to_json(reference, model),
        "results": [os.path.basename(p) for p in paths],
        "seconds": result.seconds,
        "candidates": result.candidates,
        "candidates_per_second": result.candidates / result.scoring_seconds if result.scoring_seconds else None,
        "steps": [{**asdict(s), "candidates_per_second": s.candidates_per_second} for s in result.steps],
    }
    atomic.write_json(os.path.join(output, "search.json"), summary)
    return paths


def _scored(found: Found, model: TrainedModel) -> dict:
    return {"reward": found.reward.reward, "energy": found.reward.energy, "units": model.units,
            "penalties": found.reward.penalties, "penalty_free": found.reward.penalty_free}


def found_to_json(found: Found, model: TrainedModel) -> dict:
    return {**found.network.to_json(), "n_waters": found.network.n_waters, **_scored(found, model)}


if __name__ == "__main__":  # the command line moved to mpnn.cli: say so rather than do nothing (one release)
    raise SystemExit("python -m mpnn.design.search: the command is mpnn-design (or python -m mpnn.cli.design)")
