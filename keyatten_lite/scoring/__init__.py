"""Scores as pure functions over numpy arrays: the attention methods (token and word scores) and the
candidate scoring of each profile and of BIO spans."""
