"""Data: reading and writing video, training clips and their DataModule, the frame and token caches, held-out
splits, ground-truth actions, and the sprite, Procgen and Atari generators. Imports genie.models, never
genie.training or the commands."""
