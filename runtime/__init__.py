"""A local Lambda: the Runtime API emulator, the function process, API Gateway events.

Used by `invoke validate` (smoke test) and later by `invoke serve`.
"""
