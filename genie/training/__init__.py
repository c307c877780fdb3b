"""Training: one LightningModule per stage (TokenizerModule, LAMModule, DynamicsModule), the Trainer and run
folders (trainer.py) and the three-stage pipeline that writes the bundle (pipeline.py)."""
