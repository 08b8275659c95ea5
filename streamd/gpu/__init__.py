"""GPU-only parts (CuPy). Importing this package needs nothing; using it needs CuPy and a GPU."""
