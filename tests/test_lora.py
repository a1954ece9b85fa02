"""LoRA adapters (agents/lm/lora.py) in the LM agents, reward-model training, the reward_model plugin and
``textenv export``: the reference is the base model, only the adapter trains, resume is exact, export and the plugin
compute what the trainer computed, and bad settings get one line."""

from __future__ import annotations

import json
import sys

import gymnasium as gym
import pytest
import torch

import rewards
from agents.lm import GRPOConfig, GRPOTrainer, LMPPOConfig, LMPPOTrainer, LoRASettings, RLOOConfig, RLOOTrainer
from agents.reward_model import RewardModelConfig, RewardModelTrainer
from accelerate_launch import launch, tiny_ppo_script
from cli_util import assert_one_line_error, run_main
from test_lm_distributed import BODY, free_port
from textenv.models import TINY_MODEL, load_causal_lm
from textenv.preferences import PreferencePair

pytest.importorskip("peft")

ENV_KWARGS = {"max_new_tokens": 5}
TINY_BYTES = sum(p.numel() * p.element_size() for p in load_causal_lm(TINY_MODEL).parameters())


def trainer_of(trainer_class, config_class, **config):
    config = config_class(**{"num_envs": 4, "num_minibatches": 2, "learning_rate": 2e-2, "progress_bar": False,
                             "seed": 3, "lora": {"r": 4}, **config})
    return trainer_class("MossWords-v0", TINY_MODEL, config, env_kwargs=ENV_KWARGS)


def perturb_adapter(model, seed=0):
    """Make every ``lora_B`` non-zero (they start at 0, where the adapter is the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


def test_the_reference_is_the_base_model_without_a_copy():
    trainer = trainer_of(GRPOTrainer, GRPOConfig, num_generations=2, beta=0.1)
    policy = trainer.unwrapped_policy
    perturb_adapter(policy)
    base = load_causal_lm(TINY_MODEL).eval()
    ids = torch.randint(0, 1000, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = trainer.reference(input_ids=ids).logits
        adapted = policy(input_ids=ids).logits
        expected = base(input_ids=ids).logits
    assert torch.equal(reference, expected)  # the adapter switched off is exactly the base model
    assert not torch.allclose(adapted, expected, atol=1e-3)  # ... and switched on again after the reference forward
    # the reference holds no weights of its own: every tensor it reads is the policy's
    assert {p.data_ptr() for p in trainer.reference.parameters()} == {p.data_ptr() for p in policy.parameters()}
    # the trainer's reference log-probs of a rollout are the base model's (shared prompt forward included)
    rollout = trainer.collect(group_size=2)
    tempered, _ = trainer.reference_logprobs(rollout)
    from agents.lm import sequence_logprobs

    with torch.no_grad():
        base_logprobs = sequence_logprobs(base, rollout, allowed=trainer.engine.allowed)
    assert torch.allclose(tempered, base_logprobs, atol=1e-5)
    trainer.close()


@pytest.mark.parametrize("agent", ["grpo", "rloo"])
def test_only_the_adapter_trains_and_the_optimizer_holds_only_it(agent):
    trainer_class, config_class = {"grpo": (GRPOTrainer, GRPOConfig), "rloo": (RLOOTrainer, RLOOConfig)}[agent]
    trainer = trainer_of(trainer_class, config_class, num_generations=2, beta=0.1)
    policy = trainer.unwrapped_policy
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    adapter = {id(p) for name, p in policy.named_parameters() if "lora_" in name}
    assert optimised == adapter
    metrics = trainer.train(1)[0]
    changed = {name for name, p in policy.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all("lora_B" in name or "lora_A" in name for name in changed)
    assert any("lora_B" in name for name in changed)  # the update left the identity
    assert metrics["kl"] == metrics["kl"]  # the KL to the adapter-off reference is logged
    trainer.close()


def adapter_state(model):
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def test_resume_is_exact_and_the_checkpoint_holds_adapters_only(tmp_path, capsys):
    """LM-PPO: the policy's adapter and the value model's adapter + head (on the policy's shared base weights)."""
    straight = trainer_of(LMPPOTrainer, LMPPOConfig, critic_learning_rate=2e-2)
    assert {p.data_ptr() for p in straight.value_model.backbone.parameters() if not p.requires_grad} <= {
        p.data_ptr() for p in straight.unwrapped_policy.parameters()}  # the critic copies no base weight
    optimised = {id(p) for group in straight.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for model in (straight.unwrapped_policy, straight.value_model)
                         for p in model.parameters() if p.requires_grad}
    expected = straight.train(2)
    straight.close()

    first = trainer_of(LMPPOTrainer, LMPPOConfig, critic_learning_rate=2e-2, output_dir=str(tmp_path / "run"))
    first.train(1)  # saves at the end
    first.close()
    checkpoint = tmp_path / "run" / "checkpoint"
    assert not list(checkpoint.rglob("model.safetensors"))  # no base weights, no pickles
    assert not list(checkpoint.rglob("*.bin"))
    weights = sum(f.stat().st_size for f in checkpoint.rglob("*.safetensors"))
    assert weights < TINY_BYTES / 10

    resumed = trainer_of(LMPPOTrainer, LMPPOConfig, critic_learning_rate=2e-2, output_dir=str(tmp_path / "run"))
    assert resumed.load_checkpoint()
    again = resumed.train(1)
    drop = ("seconds", "per_second")
    for key, value in expected[1].items():
        if not key.endswith(drop):
            assert again[0][key] == value, key
    assert all(torch.equal(a, b) for a, b in zip(adapter_state(resumed.unwrapped_policy).values(),
                                                  adapter_state(straight.unwrapped_policy).values()))
    assert all(torch.equal(a, b) for a, b in zip(adapter_state(resumed.value_model).values(),
                                                  adapter_state(straight.value_model).values()))

    # textenv export: the adapter merged into a plain transformers model computes the adapted policy's logits
    from transformers import AutoModelForCausalLM

    code, out, err = run_main(capsys, "export", str(tmp_path / "run"), "--out", str(tmp_path / "merged"))
    assert code == 0, err
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    ids = torch.randint(0, 1000, (2, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, resumed.unwrapped_policy(input_ids=ids).logits,
                              atol=1e-5)
    resumed.close()


def test_adapter_in_the_top_blocks_keeps_the_frozen_trunk_in_a_multi_turn_env():
    """With ``blocks=1`` the tiny model's lower block stays the base model's: the rollout's frozen trunk is shared
    by the (adapter-off) reference and the loss forwards, here across the turns of a dialogue env."""
    env = gym.make_vec("MossChat-v0", num_envs=4, vectorization_mode="vector_entry_point",
                       autoreset_mode=gym.vector.AutoresetMode.DISABLED, tokenizer=TINY_MODEL,
                       prompts=["My phone broke.", "It rained all week."], responder="scripted",
                       responder_kwargs={"replies": ["Hm.", "Go on, tell me more."]}, max_turns=2,
                       max_turn_tokens=3, max_total_tokens=24, max_prompt_tokens=40)
    config = GRPOConfig(num_envs=4, num_generations=2, num_minibatches=2, learning_rate=2e-2, beta=0.1,
                        progress_bar=False, lora={"r": 4, "blocks": 1})
    trainer = GRPOTrainer(env, TINY_MODEL, config)
    policy = trainer.unwrapped_policy
    assert not any("layers.0." in name for name, p in policy.named_parameters() if p.requires_grad)
    metrics = trainer.train(1)[0]
    assert trainer.shared_trunk_blocks == 1
    assert abs(metrics["kl"]) < 1e-4  # sampled by the untrained adapter: policy and reference are one function
    trainer.close()


def test_two_process_data_parallel_lora_keeps_replicas_identical(tmp_path):
    """LM-PPO with adapters in the top block under ``accelerate launch`` (gloo): DDP averages the adapters'
    gradients, the frozen trunk still applies, and both replicas end bit-identical."""
    script = tiny_ppo_script(num_envs=4, body=BODY).replace("seed=0)", "seed=0, lora={'r': 4, 'blocks': 1})")
    reports = launch(tmp_path, script, "--multi_gpu", "--num_processes", "2", "--mixed_precision", "no",
                     "--main_process_port", str(free_port()))
    rank0, rank1 = reports
    assert rank0["initial"] == rank1["initial"]
    assert rank0["policy"] == rank1["policy"] != rank0["initial"]
    assert rank0["value"] == rank1["value"]
    assert rank0["logged_reward_mean"] == rank1["logged_reward_mean"]
    assert {r["shared_trunk_blocks"] for r in reports} == {1}


PAIRS = [PreferencePair(prompt=f"Review {i % 5}:", chosen="good great fine " * (1 + i % 3),
                        rejected="bad awful " * (1 + i % 2)) for i in range(24)]


def test_a_lora_reward_model_scores_the_same_in_the_plugin_and_after_export(tmp_path, capsys):
    out = tmp_path / "rm"
    config = RewardModelConfig(model=TINY_MODEL, lora={"r": 4}, trainable_blocks=1, num_train_epochs=1,
                               learning_rate=1e-2, output_dir=str(out), progress_bar=False)
    trainer = RewardModelTrainer(PAIRS, config)
    trainer.train()
    assert trainer.frozen_cache is not None  # the adapter in the top block: the lower one's output is cached
    assert not (out / "model.safetensors").exists() and (out / "adapter_model.safetensors").is_file()
    indices = list(range(6))
    chosen, _ = trainer.scores(indices)
    prompts, texts = [PAIRS[i].prompt for i in indices], [PAIRS[i].chosen for i in indices]
    plugin = rewards.make({"name": "reward_model", "kwargs": {"path": str(out)}})
    assert torch.allclose(torch.tensor(list(plugin(prompts, texts)), dtype=torch.float32), chosen, atol=1e-5)

    code, _, err = run_main(capsys, "export", str(out), "--out", str(tmp_path / "plain"))
    assert code == 0, err
    assert (tmp_path / "plain" / "model.safetensors").is_file()
    exported = rewards.make({"name": "reward_model", "kwargs": {"path": str(tmp_path / "plain")}})
    assert torch.allclose(torch.tensor(list(exported(prompts, texts)), dtype=torch.float32), chosen, atol=1e-5)


@pytest.mark.parametrize(
    "value, fragment",
    [
        ({"r": 0}, "GRPOConfig.lora.r=0; expected an int >= 1"),
        ({"rank": 8}, "GRPOConfig.lora has unknown keys ['rank']"),
        ({"alpha": -1}, "GRPOConfig.lora.alpha=-1; expected a number > 0"),
        ({"target_modules": []}, "GRPOConfig.lora.target_modules=[]"),
        ({"dropout": 0.1}, "GRPOConfig.lora.dropout=0.1; the LM agents keep the policy in eval mode"),
        ("yes", "GRPOConfig.lora='yes'; expected None, true, or an object"),
    ],
)
def test_bad_lora_settings_get_one_line(value, fragment):
    with pytest.raises(ValueError) as info:
        GRPOConfig(lora=value)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_bad_lora_settings_on_the_command_line(tmp_path, capsys):
    code, _, err = run_main(capsys, "train", "--env", "MossWords-v0", "--agent", "grpo", "--model", TINY_MODEL,
                            "--steps", "8", "--out", str(tmp_path / "run"), "--no-progress",
                            "--agent-kwargs", 'lora={"r": -1}')
    assert_one_line_error(code, err, "lora.r=-1")
    code, _, err = run_main(capsys, "train-rm", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "rm"),
                            "--lora", '{"dropout": 2}')
    assert_one_line_error(code, err, "RewardModelConfig.lora.dropout=2")
    code, _, err = run_main(capsys, "export", str(tmp_path), "--out", str(tmp_path / "x"))
    assert_one_line_error(code, err, "holds no adapter and no checkpoint")
    config = GRPOConfig(num_envs=4, num_generations=2, progress_bar=False, lora={"target_modules": ["nope"]})
    with pytest.raises(ValueError, match="lora: LlamaForCausalLM refuses the adapter: .*nope"):
        GRPOTrainer("MossWords-v0", TINY_MODEL, config, env_kwargs=ENV_KWARGS)


def test_lora_without_peft_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now fails, as without the extra
    config = GRPOConfig(num_envs=4, num_generations=2, progress_bar=False, lora=True)
    assert config.lora == LoRASettings()
    with pytest.raises(ImportError, match=r"^LoRA needs the peft library: pip install 'textenv\[lora\]'$"):
        GRPOTrainer("MossWords-v0", TINY_MODEL, config, env_kwargs=ENV_KWARGS)


def test_the_saved_config_round_trips_the_settings():
    config = GRPOConfig(lora={"r": 8, "target_modules": ["q_proj", "v_proj"]})
    again = GRPOConfig.from_dict(json.loads(config.to_json()))
    assert again.lora == LoRASettings(r=8, target_modules=["q_proj", "v_proj"])
