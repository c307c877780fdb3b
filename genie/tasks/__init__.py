"""LightningModules: one per stage (tokenizer, lam, dynamics). Models themselves live in genie/<stage>.py."""
