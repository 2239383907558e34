"""Profiles: which reader, candidate rules, scoring and constants a pipeline runs with."""
