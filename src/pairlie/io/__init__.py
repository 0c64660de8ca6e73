"""Files and images on disk: atomic writes, reading and saving photos, process memory settings.

The ground floor above `pairlie.errors`: imports nothing else of pairlie.
"""
