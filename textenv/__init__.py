"""textenv: language-model text generation as a Gymnasium environment.

``import textenv`` registers the environment ids (``MossText-v0`` and friends) with Gymnasium;
``gym.make("textenv:MossText-v0")`` does the import for you.
"""

from textenv.env import TextGenerationEnv
from textenv.models import DEFAULT_MODEL, TINY_MODEL, load_causal_lm, load_tokenizer
from textenv.prompts import Prompt, load_prompts
from textenv.registration import ENV_IDS, register_envs
from textenv.task import TextTask

__version__ = "0.1.0"

register_envs()

__all__ = [
    "DEFAULT_MODEL",
    "ENV_IDS",
    "TINY_MODEL",
    "Prompt",
    "TextGenerationEnv",
    "TextTask",
    "load_causal_lm",
    "load_prompts",
    "load_tokenizer",
    "register_envs",
]
