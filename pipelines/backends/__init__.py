"""Generation and judging backends: one protocol, three implementations (transformers, vLLM, OpenAI-compatible)."""
