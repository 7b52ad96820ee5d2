"""Layer-0 building blocks shared by the tokenizer, transformer and student (torch only)."""
