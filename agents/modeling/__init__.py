"""Running causal LMs for the agents: one KV-cached decoding path (:mod:`~agents.modeling.decoding`), a causal LM
acting in a textenv env one token per step (:mod:`~agents.modeling.lm_policy`), the parts of a transformers
model that running it block by block needs (:mod:`~agents.modeling.model_blocks`), and token-id observations pooled
into features for the classic agents' networks (:mod:`~agents.modeling.token_pooling`).

The package imports nothing itself: import the module you need.
"""
