"""Looking inside learned prompts: `prompttune inspect`."""
