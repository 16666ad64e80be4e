"""Many prompts over one frozen model: mixed batches and ensembles."""
