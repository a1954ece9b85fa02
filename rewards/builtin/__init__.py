"""Built-in reward plugins; importing this package registers them (cheaply: no torch import)."""

from rewards.builtin.classifier import ClassifierReward
from rewards.builtin.fluency import FluencyReward
from rewards.builtin.game_outcome import game_reward
from rewards.builtin.keyword import KeywordReward
from rewards.builtin.length import LengthReward
from rewards.builtin.reasoning_gym import ReasoningGymReward
from rewards.builtin.repetition import RepetitionReward
from rewards.builtin.reward_model import RewardModelReward
from rewards.builtin.sentiment import SentimentReward
from rewards.builtin.topic_words import TopicWordsReward

__all__ = [
    "ClassifierReward",
    "FluencyReward",
    "KeywordReward",
    "LengthReward",
    "ReasoningGymReward",
    "RepetitionReward",
    "RewardModelReward",
    "SentimentReward",
    "TopicWordsReward",
    "game_reward",
]
