"""The engine: executors that move tasks to workers, and the loops that drive them."""
