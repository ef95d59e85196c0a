"""Benchmarks run by `make bench`: not tests, and not collected by pytest (its testpaths is tests/)."""
