"""Model bundles: the teacher (tokenizer + transformer + text) and the one-step student."""
