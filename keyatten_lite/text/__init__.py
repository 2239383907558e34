"""Text side of the pipeline, no model: input bounds, segmentation, phrase keys and candidates."""
