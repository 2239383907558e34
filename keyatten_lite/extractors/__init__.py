"""Extractors users construct: KeyAttenExtractor (a facade over the pipeline) and the BIO tagger."""
