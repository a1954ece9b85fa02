"""The configs' surface: study switches live in ``experimental`` (and a config, checkpoint or run directory saved
when they were top-level fields still loads), ``trainable_blocks`` freezes the lower blocks of the policy and its
critic, and the trainers log their execution plan (what is trained, shared, cached, and why a path does not apply)."""

from __future__ import annotations

import json
import logging
import warnings

import pytest

from agents.lm import ExperimentalSettings, GRPOConfig, GRPOTrainer, LMPPOConfig, LMPPOTrainer, RLOOConfig
from agents.lm.checkpoint_io import CONFIG_FILE
from agents.lm.logger import PLAN_FILE
from agents.modeling.model_blocks import transformer_blocks
from agents.reward_model import RewardModelConfig
from agents.runs.agent_args import check_agent_kwargs
from cli_util import assert_one_line_error, run_main
from test_lm_checkpoint import ENV_KWARGS
from textenv.models import TINY_MODEL, make_tiny_causal_lm

SMALL = dict(num_envs=4, num_minibatches=2, learning_rate=2e-3, progress_bar=False, seed=0)


def as_saved_before(config_dict: dict) -> dict:
    """``config_dict`` (``to_dict()``) in the format of a config saved before the study switches moved: each field
    of ``experimental`` at the top level, no ``experimental``."""
    old = dict(config_dict)
    old.update(old.pop("experimental"))
    return old


# -- experimental: checked by name, one class's switches refused elsewhere --------------------------------------
@pytest.mark.parametrize(
    ("config_class", "experimental", "message"),
    [
        (GRPOConfig, {"kl_estimator": "k4"}, "GRPOConfig.experimental.kl_estimator='k4'; expected one of"),
        (GRPOConfig, {"dapo_normalizer": "global"}, "GRPOConfig.experimental.dapo_normalizer='global'"),
        (GRPOConfig, {"kl_importance_weight": "yes"}, "GRPOConfig.experimental.kl_importance_weight='yes'"),
        (LMPPOConfig, {"share_frozen_trunk": 0}, "LMPPOConfig.experimental.share_frozen_trunk=0"),
        (GRPOConfig, {"kl_coef": 0.1}, "GRPOConfig.experimental has unknown keys ['kl_coef']"),
        (RLOOConfig, ["kl_estimator"], "RLOOConfig.experimental=['kl_estimator']; expected an object"),
        (LMPPOConfig, {"kl_importance_weight": True}, "experimental.kl_importance_weight applies to GRPOConfig only"),
        (RLOOConfig, {"dapo_normalizer": "rollout"}, "experimental.dapo_normalizer applies to GRPOConfig only"),
    ],
)
def test_study_switches_are_checked_and_named(config_class, experimental, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        config_class(experimental=experimental)


def test_study_switches_round_trip_and_read_from_a_dict_or_the_dataclass():
    config = GRPOConfig(experimental={"kl_importance_weight": True, "kl_estimator": "k2"})
    assert config.experimental == ExperimentalSettings(kl_importance_weight=True, kl_estimator="k2")
    assert config == GRPOConfig(experimental=ExperimentalSettings(kl_importance_weight=True, kl_estimator="k2"))
    saved = json.loads(config.to_json())
    assert saved["experimental"]["kl_importance_weight"] is True and "kl_importance_weight" not in saved
    assert GRPOConfig.from_dict(saved) == config
    # the exact speed paths and the study switches are no top-level fields any more
    for name in ("share_prompt_forward", "share_frozen_trunk", "kl_estimator", "kl_importance_weight",
                 "dapo_normalizer"):
        assert not hasattr(GRPOConfig(), name) and not hasattr(LMPPOConfig(), name), name
    for name in ("share_prompt_forward", "cache_frozen_blocks"):
        assert not hasattr(RewardModelConfig(), name), name


# -- configs saved before: read into experimental ------------------------------------------------------------------
def test_a_config_saved_with_top_level_study_switches_loads_them_into_experimental():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # switches at their defaults move without a word
        assert GRPOConfig.from_dict(as_saved_before(GRPOConfig().to_dict())) == GRPOConfig()
        assert LMPPOConfig.from_dict(as_saved_before(LMPPOConfig().to_dict())) == LMPPOConfig()
    switches = {"kl_importance_weight": True, "share_frozen_trunk": False}
    old = as_saved_before(GRPOConfig(experimental=switches).to_dict())
    with pytest.warns(UserWarning) as record:
        config = GRPOConfig.from_dict(old)
    assert len(record) == 1
    assert str(record[0].message) == ("GRPOConfig: kl_importance_weight=True, share_frozen_trunk=False moved into "
                                      "experimental (study switches, no stability promise) and is read from there")
    assert config.experimental.kl_importance_weight is True and config.experimental.share_frozen_trunk is False

    rm = RewardModelConfig(experimental={"cache_frozen_blocks": False})
    rm.validate()
    old_rm = as_saved_before(rm.to_dict())
    assert old_rm["cache_frozen_blocks"] is False and "experimental" not in old_rm
    with pytest.warns(UserWarning, match="RewardModelConfig: cache_frozen_blocks=False moved into experimental"):
        loaded = RewardModelConfig.from_dict(old_rm)
    loaded.validate()
    assert loaded == rm


def test_a_checkpoint_saved_with_top_level_study_switches_resumes_with_them(tmp_path):
    config = GRPOConfig(**SMALL, num_generations=2, beta=0.1, output_dir=str(tmp_path),
                        experimental={"dapo_normalizer": "rollout"})
    first = GRPOTrainer("MossText-v0", TINY_MODEL, config, env_kwargs=ENV_KWARGS)
    first.train(1)
    path = tmp_path / "checkpoint" / CONFIG_FILE
    path.write_text(json.dumps(as_saved_before(json.loads(path.read_text()))))  # as an older version wrote it
    resumed = GRPOTrainer("MossText-v0", TINY_MODEL, config, env_kwargs=ENV_KWARGS)
    with pytest.warns(UserWarning) as record:
        assert resumed.load_checkpoint()
    messages = [str(w.message) for w in record]
    assert messages == ["GRPOConfig: dapo_normalizer='rollout' moved into experimental (study switches, no stability "
                        "promise) and is read from there"]  # and no "config differs" warning: it is the same config
    assert resumed.iteration == 1


def test_a_run_directory_with_top_level_study_switches_is_accepted():
    check_agent_kwargs("grpo", {"kl_importance_weight": True, "share_frozen_trunk": False})  # as run.json held them
    check_agent_kwargs("lm-ppo", {"experimental": {"share_prompt_forward": False}, "trainable_blocks": 8})
    with pytest.raises(ValueError, match=r"grpo argument experimental has unknown keys \['beta'\]"):
        check_agent_kwargs("grpo", {"experimental": {"beta": 0.1}})
    with pytest.raises(ValueError, match="grpo argument trainable_blocks='top': expected NoneType or int"):
        check_agent_kwargs("grpo", {"trainable_blocks": "top"})


# -- trainable_blocks and the execution plan -------------------------------------------------------------------
def test_trainable_blocks_freezes_the_policy_and_critic_below_their_top_blocks_and_the_plan_says_so(tmp_path, caplog):
    config = LMPPOConfig(**SMALL, critic_learning_rate=2e-3, trainable_blocks=1, output_dir=str(tmp_path))
    trainer = LMPPOTrainer("MossText-v0", make_tiny_causal_lm(seed=0, num_hidden_layers=3), config,
                           env_kwargs=ENV_KWARGS)
    policy, critic = trainer.unwrapped_policy, trainer.accelerator.unwrap_model(trainer.value_model)
    trained = {name for name, p in policy.named_parameters() if p.requires_grad}
    top = {name for name, _ in policy.named_parameters() if name.startswith(("model.layers.2.", "model.norm"))}
    assert trained == top
    critic_blocks = transformer_blocks(critic.backbone)
    assert not any(p.requires_grad for block in critic_blocks[:2] for p in block.parameters())
    assert all(p.requires_grad for p in [*critic_blocks[2].parameters(), *critic.head.parameters()])

    line = trainer.execution_plan().line()
    assert "checked against the full forward on the first rollout" in line
    with caplog.at_level(logging.INFO, logger="agents.lm"):
        trainer.train(1)
    assert [r.getMessage() for r in caplog.records if r.name == "agents.lm"] == [line]
    assert (tmp_path / PLAN_FILE).read_text() == line + "\n"
    plan = trainer.execution_plan()
    assert plan.part("trains").why == "trainable_blocks=1" and "the top 1 of 3 blocks" in plan.part("trains").what
    assert plan.part("frozen trunk").what.startswith("the output of blocks 0-1 is kept while sampling")
    assert plan.part("value model").what.endswith("runs block 2 on the policy's frozen trunk")
    assert trainer.shared_trunk_blocks == 2  # what the plan says is what ran
    assert plan.part("reference").why == "for the KL penalty kl_coef=0.05 and reference_metrics"


def test_the_plan_says_why_a_path_does_not_apply():
    whole = GRPOTrainer("MossText-v0", TINY_MODEL, GRPOConfig(**SMALL, num_generations=2, reference_metrics=False),
                        env_kwargs=ENV_KWARGS).execution_plan()
    assert str(whole.part("frozen trunk")) == (
        "frozen trunk: off (every parameter trains; trainable_blocks=N freezes all but the top N blocks)"
    )
    assert str(whole.part("prompt forward")).endswith("(2 completions per prompt)")
    assert str(whole.part("reference")).startswith("reference: none")
    forced = GRPOTrainer("MossText-v0", TINY_MODEL, GRPOConfig(
        **SMALL, num_generations=2, trainable_blocks=1,
        experimental={"share_frozen_trunk": False, "share_prompt_forward": False},
    ), env_kwargs=ENV_KWARGS).execution_plan()
    assert str(forced.part("frozen trunk")) == "frozen trunk: off (turned off by experimental.share_frozen_trunk=False)"
    assert str(forced.part("prompt forward")) == (
        "prompt forward: every sequence forwarded whole (turned off by experimental.share_prompt_forward=False)"
    )
    policy = make_tiny_causal_lm(seed=0)
    policy.get_input_embeddings().requires_grad_(False)  # frozen by the caller: kept as passed
    transformer_blocks(policy)[0].requires_grad_(False)
    passed = GRPOTrainer("MossText-v0", policy, GRPOConfig(**SMALL, num_generations=2), env_kwargs=ENV_KWARGS)
    assert passed.execution_plan().part("trains").what.startswith("the parameters that require grad")
    assert passed.shareable_trunk_blocks() == 1
    with pytest.raises(ValueError, match="trainable_blocks=3, but the model has 2 blocks"):
        GRPOTrainer("MossText-v0", TINY_MODEL, GRPOConfig(**SMALL, num_generations=2, trainable_blocks=3),
                    env_kwargs=ENV_KWARGS)


def test_trainable_blocks_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_main(
        capsys, "train", "--env", "MossText-v0", "--agent", "grpo", "--model", TINY_MODEL, "--no-progress",
        "--steps", "8", "--out", str(out), "--env-kwargs", f"tokenizer={TINY_MODEL}", "max_new_tokens=4",
        "--agent-kwargs", "num_envs=4", "num_generations=2", "trainable_blocks=1",
    )
    assert code == 0, err
    plan = (out / PLAN_FILE).read_text()
    assert "trains: the top 1 of 2 blocks and the final norm" in plan and "frozen trunk: the output of block 0" in plan
    saved = json.loads((out / "checkpoint" / CONFIG_FILE).read_text())
    assert saved["trainable_blocks"] == 1
    code, _, err = run_main(capsys, "train", "--env", "MossText-v0", "--agent", "grpo", "--steps", "8", "--out",
                            str(tmp_path / "bad"), "--agent-kwargs", 'experimental={"kl_estimator": "k9"}')
    assert_one_line_error(code, err, "experimental.kl_estimator='k9'")
