"""Model plumbing: the frozen backbone, virtual tokens and key/value prefixes, how prompts are attached to a batch, where models come from, seeded initialisation."""
