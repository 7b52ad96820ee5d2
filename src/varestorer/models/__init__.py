"""Composite models: the teacher bundle (tokenizer + transformer) and the one-step student."""
