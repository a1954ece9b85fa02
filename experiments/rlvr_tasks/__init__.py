"""RL on tasks nobody here wrote: baselines and textenv GRPO on reasoning-gym tasks and a TextArena game (REPORT.md)."""
