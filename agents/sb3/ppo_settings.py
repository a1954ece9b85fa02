"""The PPO settings :func:`agents.sb3.make_sb3` gives SB3's PPO family on textenv, in a module that imports nothing,
so that another library's PPO (:mod:`agents.rllib`) trains with the same recipe without stable-baselines3."""

#: Chosen on MossWords-v0 (4-token completions, reward only at the end): short rollouts so updates come often,
#: gamma 1 (the episode is a few steps and only the last reward matters), and an entropy bonus so the policy keeps
#: exploring a vocabulary of hundreds of actions. SB3's names; its other PPO defaults apply.
PPO_HYPERPARAMS = dict(
    n_steps=128, batch_size=64, n_epochs=4, learning_rate=3e-3, gamma=1.0, gae_lambda=0.95, ent_coef=0.01
)
