"""The LQR model and its exact oracle: problems, the built-in library, python-control interop."""
