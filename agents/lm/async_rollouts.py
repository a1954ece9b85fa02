"""The asynchronous actor-learner mode of the LM agents (``config.async_rollouts=True``): an actor process samples
round ``n + 1`` while the learner updates on round ``n``.

Timeline of one run (round ``n``'s samples come from ``W[n - 1]``, the weights the learner held when round
``n - 1`` began; the first round of a run is on-policy)::

    learner:  take round n | write W[n] to the actor, ask for round n+1 | reference, proximal forward, update -> W[n+1]
    actor:                                                       load W[n] | sample round n+1 (env, reward plugin)

* **Processes.** The actor is a forked child of the learner: it owns its copy of the vector env (and so of the
  reward plugin) and of the policy, and samples with the trainer's own :class:`agents.lm.rollout.RolloutEngine`
  code, one thread; the learner is set to one thread while the loop runs (both restored afterwards). Requests
  (round, prompt indices, how many frozen blocks' states to keep) and rollouts go through a pipe.
* **Weight sync, every round.** The trained parameters (those with ``requires_grad``; frozen blocks never change)
  are copied into shared-memory buffers (:class:`BehaviourWeights`) by the learner after it takes a round and
  into the actor's model before it samples the next; the buffers are never written while the actor reads them.
  Logged per round: ``weight_sync_seconds`` (the learner's compare and copy) and ``actor_weight_load_seconds``.
* **Off-policy correction** (TRL's ``GRPOTrainer`` with ``vllm_importance_sampling_correction``, mode
  ``token_truncate``; NeMo-RL's ``use_importance_sampling_correction`` with ``truncated_importance_sampling_ratio``):
  the learner runs its policy before the update over the round (the *proximal* forward), uses those log-probs as
  the PPO ratio's old policy (and in every KL term), and multiplies each token's policy loss by
  ``min(pi_old / pi_behaviour, importance_sampling_cap)``, ``pi_behaviour`` being the actor's sampling log-probs.
  When the actor's weights equal the learner's (the first round, or rounds where the policy did not train, such
  as LM-PPO's critic warm-up) the forward is skipped and every weight is exactly 1. Logged per round:
  ``importance_weight_mean`` (as applied), ``importance_weight_max`` (before truncation) and
  ``importance_weight_clipped_fraction`` (the share of tokens truncated).
* **Determinism.** Round ``r`` is sampled with the generators :class:`agents.lm.seeding.IterationSeeds` derives for
  ``r`` (as in the synchronous mode) and with ``W[r - 1]``, whatever the timing: same seed, same run. Checkpoints
  also hold the weights the next round is sampled with (``behaviour_policy/``), so a killed run resumes exactly.
* **Shutdown.** Leaving the loop (return, exception, Ctrl-C) stops the actor (SIGTERM, then SIGKILL) and waits for
  it; the actor ignores Ctrl-C (the learner stops it), and on Linux dies with its parent (``PR_SET_PDEATHSIG``),
  so a killed learner leaves no orphan.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.lm.rollout import Rollout, RolloutEngine
from agents.lm.seeding import IterationSeeds

BEHAVIOUR_DIR = "behaviour_policy"  # in a checkpoint: the trained weights the next round is sampled with
WEIGHTS_FILE = "weights.safetensors"
ACTOR_POLL_SECONDS = 0.5  # how often a waiting learner checks that the actor is still alive
STOP_TIMEOUT_SECONDS = 10.0


def truncated_importance_weights(
    proximal: torch.Tensor, behaviour: torch.Tensor, mask: torch.Tensor, cap: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token weights ``min(exp(proximal - behaviour), cap)`` (``(N, T)``, 0 outside ``mask``) and their
    statistics over the masked tokens: ``importance_weight_mean`` (of the truncated weights),
    ``importance_weight_max`` (before truncation) and ``importance_weight_clipped_fraction``."""
    ratio = torch.exp((proximal - behaviour) * mask) * mask
    weights = ratio.clamp(max=cap)
    count = mask.sum().clamp(min=1)
    stats = {
        "importance_weight_mean": float(weights.sum() / count),
        "importance_weight_max": float(ratio.max()) if ratio.numel() else 0.0,
        "importance_weight_clipped_fraction": float(((ratio > cap) & (mask > 0)).sum() / count),
    }
    return weights, stats


def trained_parameters(model: Any) -> dict[str, torch.Tensor]:
    """``model``'s parameters that train (``requires_grad``), by name: what the actor is sent every round."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


class BehaviourWeights:
    """Shared-memory copies of the policy's trained parameters: the weights the actor samples its next round with,
    valid for round :attr:`round`. Saved in checkpoints like a model (``save_pretrained``)."""

    def __init__(self, tensors: dict[str, torch.Tensor], round_: int) -> None:
        self.tensors = {name: t.detach().clone().share_memory_() for name, t in tensors.items()}
        self.round = round_

    @classmethod
    def of(cls, model: Any, round_: int) -> BehaviourWeights:
        return cls(trained_parameters(model), round_)

    def fits(self, model: Any) -> bool:
        """Whether these are the same tensors (names, shapes, dtypes) as ``model``'s trained parameters."""
        params = trained_parameters(model)
        return params.keys() == self.tensors.keys() and all(
            p.shape == self.tensors[n].shape and p.dtype == self.tensors[n].dtype for n, p in params.items()
        )

    def equal_to(self, model: Any) -> bool:
        """Whether ``model``'s trained parameters hold exactly these weights."""
        return all(torch.equal(p, self.tensors[name]) for name, p in trained_parameters(model).items())

    @torch.no_grad()
    def copy_from(self, model: Any) -> None:
        for name, p in trained_parameters(model).items():
            self.tensors[name].copy_(p)

    @torch.no_grad()
    def copy_to(self, targets: dict[str, torch.Tensor]) -> None:
        for name, target in targets.items():
            target.copy_(self.tensors[name])

    def save_pretrained(self, save_directory: Any, safe_serialization: bool = True) -> None:
        from safetensors.torch import save_file

        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({name: t.contiguous() for name, t in self.tensors.items()}, str(directory / WEIGHTS_FILE))


def read_behaviour_weights(checkpoint: Path, model: Any, round_: int) -> BehaviourWeights | None:
    """The behaviour weights a checkpoint holds for its next round ``round_`` (``None`` when it holds none, or
    they do not fit ``model``'s trained parameters: the round is then sampled on-policy)."""
    path = Path(checkpoint) / BEHAVIOUR_DIR / WEIGHTS_FILE
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    weights = BehaviourWeights(load_file(str(path)), round_)
    return weights if weights.fits(model) else None


def check_supported(accelerator: Any) -> None:
    """Raise a one-line ``ValueError`` where the actor process cannot run."""
    if accelerator.num_processes > 1:
        raise ValueError(
            f"async_rollouts=True runs one learner process with one actor; it cannot run under accelerate launch "
            f"with {accelerator.num_processes} processes"
        )
    if accelerator.device.type != "cpu":
        raise ValueError(
            f"async_rollouts=True samples in a forked CPU process; the policy is on {accelerator.device.type}"
        )
    if "fork" not in multiprocessing.get_all_start_methods():
        raise ValueError("async_rollouts=True needs a platform that can fork() (Linux); this one cannot")


@contextlib.contextmanager
def actor_for_loop(trainer: Any) -> Iterator[RolloutActor | None]:
    """For one training loop of ``trainer``: with ``config.async_rollouts``, start the actor process (held as
    ``trainer.rollout_actor``) and set this process to one thread; stop the actor and restore both on exit.
    Otherwise nothing."""
    if not trainer.config.async_rollouts:
        yield None
        return
    threads = torch.get_num_threads()
    policy = trainer.unwrapped_policy
    weights = trainer.behaviour_weights
    if weights is None or weights.round != trainer.iteration or not weights.fits(policy):
        weights = trainer.behaviour_weights = BehaviourWeights.of(policy, trainer.iteration)  # on-policy round
    actor = RolloutActor(trainer.engine, trainer.seeds, weights)
    torch.set_num_threads(1)
    trainer.rollout_actor = actor
    try:
        yield actor
    finally:
        trainer.rollout_actor = None
        actor.close()
        torch.set_num_threads(threads)


class RolloutActor:
    """The actor process and the learner's end of it (see the module docstring).

    Args:
        engine: the trainer's rollout engine (the actor samples with its forked copy: env, reward plugin, policy).
        seeds: the trainer's per-round seeds.
        weights: the behaviour weights, holding those of the first round this actor will sample.
    """

    def __init__(self, engine: RolloutEngine, seeds: IterationSeeds, weights: BehaviourWeights) -> None:
        self.weights = weights
        self.pending: int | None = None  # the round the actor is sampling
        context = multiprocessing.get_context("fork")
        self.connection, child_end = context.Pipe()
        self.process = context.Process(
            target=_actor_main, args=(child_end, engine, seeds, weights, os.getpid()), name="textenv-rollout-actor"
        )
        self.process.start()
        child_end.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def rollout(
        self, policy: Any, round_: int, blocks: int, prompt_indices: Callable[[int], np.ndarray]
    ) -> tuple[Rollout, bool, dict[str, float]]:
        """Round ``round_``'s rollout, sampled with the behaviour weights; then the learner's trained weights
        (``policy``'s) go to the actor, which starts on round ``round_ + 1``. Returns the rollout, whether its
        behaviour weights equal ``policy``'s, and the round's timings. ``prompt_indices(r)``: round ``r``'s prompts;
        ``blocks``: the frozen blocks whose output the actor keeps."""
        if self.pending != round_:  # the loop's first round: sampled now, with the weights it is due
            if self.weights.round != round_:
                raise RuntimeError(f"the actor holds the weights of round {self.weights.round}, not {round_}")
            self._request(round_, blocks, prompt_indices(round_))
        waited = time.perf_counter()
        rollout, actor_timings = self._receive(round_)
        timings = {"actor_wait_seconds": time.perf_counter() - waited, **actor_timings}
        started = time.perf_counter()
        same = self.weights.equal_to(policy)
        if not same:
            self.weights.copy_from(policy)
        self.weights.round = round_ + 1
        timings["weight_sync_seconds"] = time.perf_counter() - started
        self._request(round_ + 1, blocks, prompt_indices(round_ + 1))
        return rollout, same, timings

    def _request(self, round_: int, blocks: int, prompt_indices: np.ndarray) -> None:
        try:
            self.connection.send((round_, blocks, prompt_indices))
        except (BrokenPipeError, ConnectionResetError):
            raise self._died(round_) from None
        self.pending = round_

    def _receive(self, round_: int) -> tuple[Rollout, dict[str, float]]:
        try:
            while not self.connection.poll(ACTOR_POLL_SECONDS):
                if not self.process.is_alive():
                    raise self._died(round_)
            kind, *payload = self.connection.recv()
        except (EOFError, ConnectionResetError):
            raise self._died(round_) from None
        self.pending = None
        if kind == "error":
            message, details = payload
            error = RuntimeError(f"the actor process failed sampling round {round_}: {message}")
            error.add_note(f"the actor's traceback:\n{details}")
            raise error
        sampled, rollout, timings = payload
        if sampled != round_:
            raise RuntimeError(f"the actor sent round {sampled}, expected {round_}")
        return rollout, timings

    def _died(self, round_: int) -> RuntimeError:
        self.process.join(STOP_TIMEOUT_SECONDS)  # gone: its exit code
        return RuntimeError(f"the actor process died (exit code {self.process.exitcode}) before it sent round {round_}")

    def close(self) -> None:
        """Stop the actor (SIGTERM; SIGKILL if it has not gone in time) and wait for it."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(STOP_TIMEOUT_SECONDS)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.connection.close()


def correct_for_staleness(trainer: Any, rollout: Rollout, same_weights: bool) -> dict[str, float]:
    """Turn ``rollout`` (the actor's) into the learner's: its log-probs become the learner's policy's before the
    update (one no-grad forward; the actor's own when ``same_weights``, or under the study switch
    ``experimental.async_old_logprobs="actor"``), the actor's are kept as ``behaviour_logprobs``, and
    ``importance_weights`` holds each token's truncated ratio of the two. Returns the weights' statistics."""
    behaviour = rollout.logprobs
    if same_weights or trainer.config.experimental.async_old_logprobs == "actor":
        proximal = behaviour
    else:
        with trainer.timer("proximal_forward_seconds"), torch.no_grad():
            proximal, _ = trainer.policy_logprobs(trainer.policy, rollout)
    weights, stats = truncated_importance_weights(proximal, behaviour, rollout.mask,
                                                  trainer.config.importance_sampling_cap)
    rollout.behaviour_logprobs, rollout.logprobs, rollout.importance_weights = behaviour, proximal, weights
    return stats


# -- the actor process ---------------------------------------------------------------------------------------------
def _actor_main(
    connection: Any, engine: RolloutEngine, seeds: IterationSeeds, weights: BehaviourWeights, parent: int
) -> None:
    """Serve sampling requests until the pipe closes: load the behaviour weights, sample the round, send it."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the learner, which stops the actor
    signal.signal(signal.SIGTERM, _exit_on_signal)
    torch.set_num_threads(1)
    try:
        targets = trained_parameters(engine.model)
        while True:
            try:
                request = connection.recv()
            except EOFError:  # the learner is gone
                return
            round_, blocks, prompt_indices = request
            started = time.perf_counter()
            weights.copy_to(targets)
            loaded = time.perf_counter() - started
            engine.keep_states_of_blocks = blocks
            rollout = engine.collect(
                generator=seeds.generator(round_, "sampling", engine.device),
                seed=seeds.seed(round_, "env"),
                prompt_indices=prompt_indices,
            )
            connection.send(("rollout", round_, rollout, {"actor_weight_load_seconds": loaded}))
    except (BrokenPipeError, ConnectionResetError):  # the learner is gone
        return
    except Exception as error:  # noqa: BLE001 - every failure goes back to the learner, which raises it
        with contextlib.suppress(OSError):
            connection.send(("error", f"{type(error).__name__}: {error}", traceback.format_exc()))


def _exit_on_signal(signum: int, frame: Any) -> None:
    sys.exit(0)


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``); exit now if
    the parent is already gone. Elsewhere the closed pipe ends the actor at its next request."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)
