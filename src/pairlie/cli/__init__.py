"""Entry points only: each composes its config, calls one library function and prints its result.

May import every stage; nothing imports it.
"""
