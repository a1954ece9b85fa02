"""Tasks from third-party libraries as textenv envs (the ``tasks`` extra: ``pip install "textenv[tasks]"``).

* ``textenv/ReasoningGym-v0`` (:mod:`textenv.tasks.reasoning_gym_env`): any reasoning-gym dataset, single-turn,
  scored by the task's own ``score_answer`` (the ``reasoning_gym`` reward);
* ``textenv/TextArena-v0`` (:mod:`textenv.tasks.textarena_env`): a single-player TextArena game, multi-turn, the
  game answering each agent turn and its reward ending the episode (the ``game_reward`` reward).

The ids are registered whether or not the libraries are installed; making one without them raises
:class:`textenv.extras.MissingExtraError` naming the extra.
"""
