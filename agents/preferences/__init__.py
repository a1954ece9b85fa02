"""Preference data for reward models: pairs sampled from an env and labelled by a gold reward
(:mod:`~agents.preferences.pairs`), and human labelling in a terminal (:mod:`~agents.preferences.labelling`).

The package imports nothing itself: import the module you need.
"""
