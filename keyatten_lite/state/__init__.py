"""State kept across calls and processes: IDF statistics, the disk cache, atomic file writes."""
