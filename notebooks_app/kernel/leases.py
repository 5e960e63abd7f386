"""What a kernel session knows of the fleet's leases (fleet.py), without Django: the exception a
write raises when this worker no longer holds the notebook's shard."""


class Fenced(Exception):
    """This worker no longer holds the notebook's shard at the epoch it took it with: another
    worker owns the notebook now, so nothing of this session may be written or published."""
