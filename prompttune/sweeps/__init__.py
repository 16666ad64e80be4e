"""`prompttune compare`: sweeps over methods, lengths, initialisations, training sizes and seeds."""
