"""The tokens a multi-turn environment writes around the other side's reply.

With a chat template (SmolLM2's ``<|im_start|>role\\n...<|im_end|>\\n``), the agent speaks as the assistant and its
turn ends at the template's end-of-turn token; the env then inserts the end of the agent's message, the other
side's message header, the reply, its end and the next assistant header, so that the observation always reads
exactly as the chat template renders the conversation so far. Without one (word-level tokenizers), the env inserts
the reply's tokens alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_AGENT_SENTINEL = "\x00AGENT\x00"
_REPLY_SENTINEL = "\x00REPLY\x00"


@dataclass(frozen=True)
class ChatFormat:
    """Token ids the env inserts around a reply.

    Attributes:
        close_turn: what closes an agent turn that ran out of its token budget without the end-of-turn token
            (the end-of-turn token itself with a chat template; nothing without one).
        before_reply: between the agent's end-of-turn token and the reply (``"\\n<|im_start|>user\\n"``).
        after_reply: between the reply and the agent's next turn (``"<|im_end|>\\n<|im_start|>assistant\\n"``).
    """

    close_turn: tuple[int, ...] = ()
    before_reply: tuple[int, ...] = ()
    after_reply: tuple[int, ...] = ()

    @classmethod
    def from_chat_template(cls, tokenizer: Any, end_of_turn: int) -> ChatFormat:
        """Read the pieces off the tokenizer's chat template by rendering a conversation with sentinel texts."""
        messages = [
            {"role": "user", "content": "opening"},
            {"role": "assistant", "content": _AGENT_SENTINEL},
            {"role": "user", "content": _REPLY_SENTINEL},
        ]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        end_text = tokenizer.convert_ids_to_tokens(end_of_turn)
        agent_end = text.index(_AGENT_SENTINEL) + len(_AGENT_SENTINEL)
        reply_start = text.index(_REPLY_SENTINEL)
        if not text.startswith(end_text, agent_end):
            raise ValueError(
                f"the chat template does not close the assistant's message with the end-of-turn token {end_text!r}; "
                "pass chat_template=False or an end_of_turn_token the template uses"
            )
        between = text[agent_end + len(end_text) : reply_start]
        after = text[reply_start + len(_REPLY_SENTINEL) :]
        return cls((end_of_turn,), tuple(_encode(tokenizer, between)), tuple(_encode(tokenizer, after)))

    def inserted(self, reply_ids: list[int], closed_by_agent: bool) -> list[int]:
        """The tokens inserted after an agent turn: close it if the agent did not, then the reply and its frame."""
        head = [] if closed_by_agent else list(self.close_turn)
        return [*head, *self.before_reply, *reply_ids, *self.after_reply]


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
