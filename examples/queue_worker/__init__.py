"""A distributed job queue: taskiq workers sharing one account's limits through Redis.

``worker`` holds the broker, the per-process setup and the ``generate`` task; ``enqueue`` sends
a batch and waits for its results. Run both from the repository root, as modules of this package.
"""
