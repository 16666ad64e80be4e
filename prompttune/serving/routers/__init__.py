"""The server's endpoints by area, one router each: prompts (classify, generate), the registry, the
OpenAI-compatible API, and operations (health, metrics)."""
