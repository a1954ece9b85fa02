"""MossWords-v0: a small-vocabulary text task on which classic RL agents learn from scratch in minutes.

The vocabulary is a word-level tokenizer over 395 English words plus ``<pad>``, ``<eos>`` and ``<unk>`` (398
tokens), shipped as package data in ``textenv/data/moss_words/`` and loaded by the built-in name
``"moss-words"``. Twelve topics (colors, animals, fruits, ...) have twelve words each; every prompt asks for
words of one topic (``"name some colors :"``, 36 prompts) and carries the topic's words as its reference. The
reward (the built-in plugin ``"topic_words"``, :mod:`rewards.builtin.topic_words`) is the number of *distinct*
topic words in the completion divided by ``target_count`` (the completion budget, 4), capped at 1, so

* random play scores 0.031 (a random token is on topic with probability 12/398, and ``<eos>`` ends an
  episode early);
* writing one right word over and over scores 0.25: the agent has to read the prompt *and* its own
  completion to reach 1.0.

Run ``python -m textenv.word_task`` to rebuild the package data from the lists below.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")

TOPICS: dict[str, tuple[str, ...]] = {
    "colors": ("red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black", "white", "gray", "gold"),
    "animals": ("dog", "cat", "horse", "cow", "sheep", "pig", "goat", "mouse", "lion", "tiger", "bear", "wolf"),
    "fruits": (
        "apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "peach", "pear", "plum", "berry", "lime",
    ),
    "numbers": ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"),
    "weather": ("rain", "snow", "wind", "storm", "cloud", "sun", "fog", "hail", "frost", "thunder", "mist", "heat"),
    "family": (
        "mother", "father", "sister", "brother", "aunt", "uncle", "cousin", "son", "daughter", "baby", "grandma",
        "grandpa",
    ),
    "body": ("head", "hand", "foot", "arm", "leg", "eye", "ear", "nose", "mouth", "knee", "finger", "toe"),
    "food": ("bread", "cheese", "rice", "soup", "pasta", "meat", "fish", "egg", "butter", "salad", "cake", "pie"),
    "tools": (
        "hammer", "saw", "drill", "wrench", "knife", "shovel", "rake", "axe", "needle", "rope", "ladder", "brush",
    ),
    "places": (
        "city", "town", "village", "park", "beach", "forest", "river", "mountain", "lake", "school", "market", "farm",
    ),
    "feelings": (
        "happy", "sad", "angry", "calm", "proud", "afraid", "glad", "lonely", "brave", "tired", "excited", "nervous",
    ),
    "vehicles": ("car", "bus", "train", "truck", "bike", "boat", "ship", "plane", "taxi", "tram", "van", "scooter"),
}

OTHER_WORDS: tuple[str, ...] = tuple(
    """
    the a an and or but of to in on at with for from by is are was were be it this that these those i you he
    she we they my your his her our their not no yes very so too also just only some many few all more most
    name list tell me words about write say give make take go come see look know think want like love find use
    get put run walk talk eat drink sleep play work read sing good bad big small new old long short high low hot
    cold fast slow easy hard early late here there now then today always never often again thing time day night
    year way man woman child people world house room door window table chair book word story song game idea
    question answer end start kind part place life week hour minute morning evening friend name paper picture
    water fire light dark sound voice color music letter page line open close stop wait help ask try keep begin
    show hear feel leave call move live believe bring happen stand lose pay meet include continue set learn
    change lead understand watch follow create speak allow add spend grow offer remember consider appear buy
    serve die send build stay fall cut reach kill raise pass sell decide return explain hope develop carry break
    receive agree support hit produce cover catch draw choose . , : ? !
    """.split()
)

PROMPT_TEMPLATES = ("name some {topic} :", "list a few {topic} :", "tell me words about {topic} :")


def vocabulary() -> list[str]:
    """All tokens, in id order: the special tokens, the topic names, the topic words, the other words."""
    words: list[str] = list(SPECIAL_TOKENS)
    for topic, members in TOPICS.items():
        words += [topic, *members]
    words += OTHER_WORDS
    return list(dict.fromkeys(words))  # first occurrence wins ("name" is listed twice)


def prompts() -> list[dict[str, str]]:
    """Every (template, topic) pair: ``{"prompt": ..., "reference": "<the topic's 12 words>"}``."""
    return [
        {"prompt": template.format(topic=topic), "reference": " ".join(members)}
        for topic, members in TOPICS.items()
        for template in PROMPT_TEMPLATES
    ]


def build_package_data(directory: str | Path) -> Path:
    """Write the word-level tokenizer (a ``PreTrainedTokenizerFast`` directory) and ``prompts.jsonl``.

    The files are written with ``tokenizers`` and ``json`` alone, so they are the same whichever transformers
    version runs the builder, and every transformers version from 4.56 loads them.
    """
    from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {word: index for index, word in enumerate(vocabulary())}
    core = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    core.save(str(directory / "tokenizer.json"))
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": "<pad>",
        "eos_token": "<eos>",
        "unk_token": "<unk>",
        "padding_side": "left",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 512,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    with open(directory / "prompts.jsonl", "w", encoding="utf-8") as out:
        for record in prompts():
            out.write(json.dumps(record) + "\n")
    return directory


if __name__ == "__main__":
    target = Path(__file__).resolve().with_name("data") / "moss_words"
    print("wrote", build_package_data(target))
