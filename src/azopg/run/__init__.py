"""The run: records and files, train/resume, replay, speedup studies and plots."""
