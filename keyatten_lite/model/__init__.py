"""The model edge: bundles on disk (open, verify, registry), onnxruntime sessions, tokenisation and
alignment of words to tokens, windows over long texts."""
