"""RLlib PPO vs SB3 PPO on MossWords-v0 (REPORT.md)."""
