"""The models and the world-model bundle: torch, numpy and einops only (no Lightning, nothing from genie.data or
genie.training), so loading and stepping a bundle costs only what inference needs."""
