"""Collecting LM rollouts by stepping a textenv vector env, and scoring finished sequences in one forward pass.

The engine talks to the env through the plain Gymnasium vector API only: ``reset`` every row, then ``step`` one
token per row until every row's episode is over (the env's ``autoreset_mode`` must be ``DISABLED``, so a finished
row waits for the others). The policy prefills the observation's prompt slots once (each distinct prompt once) and
then decodes one token per step from its KV cache; it never re-encodes a sequence.

Observation layout (:mod:`textenv.task`): ``P = max_prompt_tokens`` left-padded prompt slots, then the completion,
then right padding. Completion token ``t`` sits at slot ``P + t`` and is predicted by the logits at slot
``P - 1 + t``; the value of the state before token ``t`` is read at the same slot.

Multi-turn envs (:mod:`textenv.dialogue_vector_env`) fill the slots after the prompt with the agent's tokens AND the
tokens the env inserts between its turns (``info["inserted_mask"]``). The engine appends each step's new tokens --
the sampled one and any inserted ones, a different number per row -- to the KV cache in one forward (no
re-encoding), and the rollout's columns are the conversation slots: ``mask`` is 1 on the agent's tokens only, so
inserted tokens never enter log-probs, KL, entropy or the loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.modeling.decoding import (
    KVDecoder,
    distinct_prompts,
    entropy_from_logprobs,
    filter_logits,
    leading_padding,
    lm_forward,
    masked_logits,
    sample_categorical,
)
from agents.lm.core import masked_logprobs
from agents.lm.frozen_trunk import TrunkStates, TrunkStateKeeper, top_block_logits
from agents.lm.turns import used_width


@dataclass
class Rollout:
    """One lockstep batch of ``N`` finished episodes, trimmed to the longest completion ``T``.

    ``input_ids``/``attention_mask`` are the env's final observations cut to ``P + T`` columns; ``mask`` marks the
    completion tokens the agent wrote (EOS included; in a multi-turn episode not the tokens the env inserted);
    ``logprobs`` are the sampling log-probs of those tokens (0 elsewhere).
    """

    input_ids: torch.Tensor  # (N, P + T) int64
    attention_mask: torch.Tensor  # (N, P + T) int64
    completion_ids: torch.Tensor  # (N, T) int64
    mask: torch.Tensor  # (N, T) float32, 1 on completion tokens
    logprobs: torch.Tensor  # (N, T) float32
    entropy: torch.Tensor  # (N, T) float32, entropy of the sampling distribution at each token
    scores: torch.Tensor  # (N,) float32, the env's reward for each episode
    terminated: torch.Tensor  # (N,) bool, ended by EOS
    truncated: torch.Tensor  # (N,) bool, hit max_new_tokens without EOS
    prompt_slots: int
    prompts: list[str] = field(default_factory=list)
    completions: list[str] = field(default_factory=list)
    reward_components: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (N,) unweighted part
    generation_seconds: float = 0.0  # model prefill + decoding + sampling
    env_seconds: float = 0.0  # inside env.reset/env.step (reward plugin included)
    step_rewards: torch.Tensor | None = None  # (N, T) the env's reward of each step, at the agent token it followed
    trunk: TrunkStates | None = None  # the policy's frozen lower blocks' output (:mod:`agents.lm.frozen_trunk`)
    # async_rollouts (:mod:`agents.lm.async_rollouts`): the actor's sampling log-probs, and each token's truncated
    # importance weight of the learner's policy (whose log-probs ``logprobs`` then holds) over the actor's
    behaviour_logprobs: torch.Tensor | None = None  # (N, T)
    importance_weights: torch.Tensor | None = None  # (N, T), 0 outside the mask

    @property
    def num_sequences(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum().item())

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(1).long()

    def select(self, rows: torch.Tensor | np.ndarray | list[int]) -> Rollout:
        """The rollout of a subset of rows (for minibatches), trimmed to their longest completion."""
        rows_t = torch.as_tensor(rows, dtype=torch.long, device=self.input_ids.device)
        t_max = used_width(self.mask[rows_t])
        width = self.prompt_slots + t_max
        return Rollout(
            input_ids=self.input_ids[rows_t, :width],
            attention_mask=self.attention_mask[rows_t, :width],
            completion_ids=self.completion_ids[rows_t, :t_max],
            mask=self.mask[rows_t, :t_max],
            logprobs=self.logprobs[rows_t, :t_max],
            entropy=self.entropy[rows_t, :t_max],
            scores=self.scores[rows_t],
            terminated=self.terminated[rows_t],
            truncated=self.truncated[rows_t],
            prompt_slots=self.prompt_slots,
            prompts=[self.prompts[i] for i in rows_t.tolist()] if self.prompts else [],
            completions=[self.completions[i] for i in rows_t.tolist()] if self.completions else [],
            reward_components={name: values[rows_t] for name, values in self.reward_components.items()},
            step_rewards=None if self.step_rewards is None else self.step_rewards[rows_t, :t_max],
            trunk=None if self.trunk is None else self.trunk.select(rows_t, width - 1),
            behaviour_logprobs=None if self.behaviour_logprobs is None else self.behaviour_logprobs[rows_t, :t_max],
            importance_weights=None if self.importance_weights is None else self.importance_weights[rows_t, :t_max],
        )


def text_vector_env(env: Any) -> Any:
    """The :class:`textenv.vector_env.TextGenerationVectorEnv` under ``env`` (wrappers allowed), checked for
    lockstep use."""
    base = getattr(env, "unwrapped", env)
    task = getattr(base, "task", None)
    if not isinstance(env, gym.vector.VectorEnv) or task is None:
        raise TypeError(
            f"expected a textenv vector env (gym.make_vec(id, vectorization_mode='vector_entry_point', "
            f"autoreset_mode=gym.vector.AutoresetMode.DISABLED)), got {type(env).__name__}"
        )
    mode = env.metadata.get("autoreset_mode", getattr(base, "autoreset_mode", None))
    if mode != gym.vector.AutoresetMode.DISABLED:
        raise ValueError(
            f"the vector env's autoreset_mode is {mode!r}; LM agents decode every row in lockstep and need "
            "autoreset_mode=gym.vector.AutoresetMode.DISABLED"
        )
    return base


def completion_logits(
    model: Any, rollout: Rollout, temperature: float = 1.0, prompt_model: Any = None, trunk: TrunkStates | None = None
) -> torch.Tensor:
    """Logits ``(N, T, V)`` that predict each completion token, from the finished sequences (each up to its last
    completion token; only the ``T`` needed positions go through the LM head).

    With ``prompt_model`` (the same weights as ``model``: the model itself, or the module inside its DDP wrapper),
    each distinct prompt of the batch is forwarded once by ``prompt_model`` and its KV cache is shared by every row
    that has that prompt; the completions then go through ``model`` on top of it. Same logits and gradients as one
    forward over the full sequences (the prompt's positions never attend to the completion), with fewer positions
    when prompts repeat, as with GRPO/RLOO's k completions per prompt. Without repeats it is the single forward.

    With ``trunk`` (the rollout's :class:`TrunkStates`, whose frozen blocks ``model`` shares; ``prompt_model`` then
    names the unwrapped model), only the blocks above the trunk run, on its states, over the full sequences.
    """
    p, t_max = rollout.prompt_slots, rollout.mask.shape[1]
    if trunk is not None:
        unwrapped = model if prompt_model is None else prompt_model
        logits = top_block_logits(model, unwrapped, trunk, rollout.attention_mask, p, t_max)
        return logits / temperature if temperature != 1.0 else logits
    width = p + t_max - 1
    first = leading_padding(rollout.attention_mask[:, :p])  # columns that are padding in every row carry nothing
    input_ids, attention_mask = rollout.input_ids[:, first:width], rollout.attention_mask[:, first:width]
    lp = p - first  # prompt columns left
    shared = None if prompt_model is None else distinct_prompts(input_ids[:, :lp], attention_mask[:, :lp])
    if shared is None:
        logits = lm_forward(model, input_ids, attention_mask, logits_to_keep=t_max, use_cache=False).logits
    else:
        # autograd flows back through the shared cache to each prompt's one forward
        decoder = KVDecoder(model, prompt_model=prompt_model)
        logits = decoder.prefill(input_ids[:, :lp], attention_mask[:, :lp], shared)[:, None]
        if t_max > 1:  # the last prompt position predicts the first completion token, each completion token the next
            later = decoder.append(input_ids[:, lp:], attention_mask[:, lp:], logits_to_keep=t_max - 1)
            logits = torch.cat([logits, later], dim=1)
    return logits / temperature if temperature != 1.0 else logits


def sequence_logprobs(
    model: Any, rollout: Rollout, temperature: float = 1.0, allowed: torch.Tensor | None = None
) -> torch.Tensor:
    """Log-probs ``(N, T)`` of the rollout's completion tokens under ``model`` (0 outside the mask)."""
    logits = masked_logits(completion_logits(model, rollout, temperature).float(), allowed)
    return masked_logprobs(logits, rollout.completion_ids, rollout.mask)


class RolloutEngine:
    """Runs ``num_envs`` episodes in lockstep through a textenv vector env with a causal LM policy.

    Args:
        env: a textenv vector env with ``autoreset_mode=DISABLED``.
        model: the policy, a transformers causal LM (used under ``torch.no_grad``; not wrapped in DDP).
        temperature: sampling temperature (> 0).
    """

    def __init__(self, env: Any, model: Any, temperature: float = 1.0) -> None:
        self.env = env
        self.base = text_vector_env(env)
        self.task = self.base.task
        self.model = model
        self.temperature = float(temperature)
        self.device = next(model.parameters()).device
        self.allowed = allowed_token_mask(self.task, model, self.device)
        # > 0: keep the hidden states entering this block while sampling, as the rollout's trunk (the trainer sets
        # it to the policy's frozen lower blocks; agents.lm.frozen_trunk)
        self.keep_states_of_blocks = 0

    @torch.no_grad()
    def collect(
        self, generator: torch.Generator, seed: int | None = None, prompt_indices: np.ndarray | None = None
    ) -> Rollout:
        """Reset every row (``prompt_indices`` picks each row's prompt), then step until every episode is over."""
        env, task, device, n = self.env, self.task, self.device, self.base.num_envs
        options = None if prompt_indices is None else {"prompt_index": np.asarray(prompt_indices, dtype=np.int64)}
        env_seconds = 0.0
        collect_started = started = time.perf_counter()
        obs, infos = env.reset(seed=seed, options=options)
        env_seconds += time.perf_counter() - started
        p = task.max_prompt_tokens

        # prefill the prompt slots once (without the columns that are padding in every row), each distinct prompt
        # once (rows that share a prompt then share its KV cache); only the last position's logits are needed
        prompt_mask = torch.as_tensor(obs["attention_mask"][:, :p], device=device)
        prompt_ids = torch.as_tensor(obs["input_ids"][:, :p], device=device)
        decoder = KVDecoder(self.model)
        keeper = TrunkStateKeeper(self.model, self.keep_states_of_blocks) if self.keep_states_of_blocks else None
        try:
            shared = distinct_prompts(prompt_ids, prompt_mask)
            logits = decoder.prefill(prompt_ids, prompt_mask, shared)
            rollout = self._decode(env, decoder, logits, obs, generator, keeper, collect_started, env_seconds)
        finally:
            if keeper is not None:
                keeper.close()
        if keeper is not None and keeper.single_token_steps:
            first = leading_padding(prompt_mask)
            rollout.trunk = keeper.states(first, None if shared is None else shared[1], rollout.mask.shape[1])
        return rollout

    def _decode(self, env: Any, decoder: KVDecoder, logits: torch.Tensor, obs: dict[str, Any],
                generator: torch.Generator, keeper: TrunkStateKeeper | None, collect_started: float,
                env_seconds: float) -> Rollout:
        """Sample one token per row per step from ``decoder``'s cache (prefilled: ``logits``) until every episode is
        over; ``keeper`` (if any) learns whether every step appended one token per row."""
        task, device, n = self.task, self.device, self.base.num_envs
        p = task.max_prompt_tokens

        tokens_per_step, logprobs_per_step, entropy_per_step, active_per_step = [], [], [], []
        slots_per_step, rewards_per_step = [], []  # the slot each step's token went to; the step's reward
        lengths = obs["attention_mask"][:, p:].sum(1)  # slots filled after the prompt (multi-turn: inserted too)
        scores = np.zeros(n, dtype=np.float64)
        components: dict[str, np.ndarray] = {}
        done = np.zeros(n, dtype=bool)
        terminated = truncated = np.zeros(n, dtype=bool)
        prompts, completions = [""] * n, [""] * n
        for step in range(task.max_new_tokens):
            # sample one token per row from the tempered, env-masked distribution and keep its log-prob
            log_probs = torch.log_softmax(filter_logits(logits, self.temperature, allowed=self.allowed), dim=-1)
            tokens = sample_categorical(log_probs, generator)
            tokens_per_step.append(tokens)
            logprobs_per_step.append(log_probs.gather(1, tokens[:, None]).squeeze(1))
            entropy_per_step.append(entropy_from_logprobs(log_probs))
            active_per_step.append(torch.as_tensor(~done, device=device))
            slots_per_step.append(lengths)

            started = time.perf_counter()
            obs, rewards, terminated, truncated, infos = env.step(tokens.cpu().numpy())
            env_seconds += time.perf_counter() - started
            rewards = np.where(done, 0.0, rewards)
            rewards_per_step.append(rewards)
            scores += rewards  # the episode's return: per-turn rewards and the final one
            newly_done = (terminated | truncated) & ~done
            for name, values in infos.get("reward_components", {}).items():
                if name.startswith("_"):  # Gymnasium's "_name" masks of which rows carry the value
                    continue
                components.setdefault(name, np.zeros(n, dtype=np.float64))[newly_done] = np.asarray(values)[newly_done]
            for row in np.flatnonzero(newly_done):
                prompts[row], completions[row] = _episode_texts(infos, row)
            done = done | newly_done
            if done.all() or step + 1 == task.max_new_tokens:
                break

            # feed this step's new tokens through the KV cache: the sampled token, and in a multi-turn episode the
            # tokens the env inserted after it (left-padded into one block, so each row's last column is real)
            new_lengths = obs["attention_mask"][:, p:].sum(1)
            grown = new_lengths - lengths
            if (grown[~done] == 1).all():
                logits = decoder.append(tokens[:, None])[:, -1]
            else:
                if keeper is not None:
                    keeper.single_token_steps = False  # the cache's columns are no longer the rollout's
                width = int(grown.max())
                block = np.full((n, width), task.pad_token_id, dtype=np.int64)
                block_mask = np.zeros((n, width), dtype=np.int64)
                for row in np.flatnonzero(grown).tolist():
                    block[row, width - grown[row] :] = obs["input_ids"][row, p + lengths[row] : p + new_lengths[row]]
                    block_mask[row, width - grown[row] :] = 1
                logits = decoder.append(
                    torch.as_tensor(block, device=device), torch.as_tensor(block_mask, device=device)
                )[:, -1]
            lengths = new_lengths
        if not done.all():
            raise RuntimeError(
                f"{int((~done).sum())} rows were still running after max_new_tokens={task.max_new_tokens} steps; "
                "the env must end every episode within max_new_tokens"
            )

        # each step's token, log-prob, entropy and reward at the slot the token went to
        slots = torch.as_tensor(np.stack(slots_per_step), device=device)  # (steps, N)
        active = torch.stack(active_per_step)  # (steps, N)
        t_max = int(slots[active].max()) + 1
        rows = torch.arange(n, device=device).expand_as(slots)[active]
        columns = slots[active]

        def at_slots(per_step: list[torch.Tensor]) -> torch.Tensor:
            values = torch.stack(per_step).float()
            placed = torch.zeros(n, t_max, dtype=torch.float32, device=device)
            placed[rows, columns] = values[active]
            return placed

        mask = at_slots([a.float() for a in active_per_step])
        ids = torch.as_tensor(obs["input_ids"][:, : p + t_max], device=device)
        elapsed = time.perf_counter() - collect_started
        return Rollout(
            input_ids=ids,
            attention_mask=torch.as_tensor(obs["attention_mask"][:, : p + t_max], device=device),
            completion_ids=ids[:, p:] * mask.long(),
            mask=mask,
            logprobs=at_slots(logprobs_per_step),
            entropy=at_slots(entropy_per_step),
            scores=torch.as_tensor(scores, dtype=torch.float32, device=device),
            reward_components={
                name: torch.as_tensor(values, dtype=torch.float32, device=device) for name, values in components.items()
            },
            terminated=torch.as_tensor(terminated, device=device),
            truncated=torch.as_tensor(truncated, device=device),
            prompt_slots=p,
            prompts=prompts,
            completions=completions,
            generation_seconds=elapsed - env_seconds,
            env_seconds=env_seconds,
            step_rewards=at_slots([torch.as_tensor(r, device=device) for r in rewards_per_step]),
        )


def _episode_texts(infos: dict[str, Any], row: int) -> tuple[str, str]:
    """A finished episode's prompt and completion; for a multi-turn episode the opening and the transcript."""
    if "conversation" in infos:
        conversation = infos["conversation"][row]
        transcript = "\n".join(f"{m['role']}: {m['content']}" for m in conversation.messages[1:])
        return conversation.opening, transcript
    return infos["prompt"][row], infos["completion"][row]


def allowed_token_mask(task: Any, model: Any, device: Any) -> torch.Tensor | None:
    """Boolean ``(model_vocab,)`` mask of the tokens the env accepts, or ``None`` when every model token is allowed."""
    model_vocab = model.get_output_embeddings().weight.shape[0]
    if model_vocab < task.vocab_size:
        raise ValueError(
            f"the model's output vocabulary has {model_vocab} tokens but the env's action space has "
            f"{task.vocab_size}; use a model that shares the env's tokenizer"
        )
    if model_vocab == task.vocab_size and bool(task.allowed.all()):
        return None
    allowed = torch.zeros(model_vocab, dtype=torch.bool, device=device)
    allowed[: task.vocab_size] = torch.as_tensor(task.allowed, device=device)
    return allowed
