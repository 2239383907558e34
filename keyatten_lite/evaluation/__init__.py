"""The measurement harness (eval, baselines, bench). The runtime never imports this package."""
