"""Speed measurement of the one-step student, its multi-step backbone and peer restorers (``varestorer bench``)."""
