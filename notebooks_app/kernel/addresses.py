"""Where kernel messages and notebook events travel: the names of the kernel channels and of
a notebook's group, shared by the web side (kernel_client.py) and the kernel worker.

Pure names, no I/O and no Django: the number of shards is the caller's (settings.KERNEL_SHARDS).
"""
import zlib

KERNEL_CHANNEL = "kernel"


def shard_channels(shards):
    """All kernel channel names: ['kernel'] for one shard, else kernel.0 .. kernel.K-1."""
    if shards <= 1:
        return [KERNEL_CHANNEL]
    return [f"{KERNEL_CHANNEL}.{k}" for k in range(shards)]


def kernel_channel(notebook_id, shards):
    """The one channel a notebook's messages go to (a stable hash of its id)."""
    if shards <= 1:
        return KERNEL_CHANNEL
    return f"{KERNEL_CHANNEL}.{zlib.crc32(str(notebook_id).encode()) % shards}"


def is_kernel_channel(name):
    return name == KERNEL_CHANNEL or name.startswith(KERNEL_CHANNEL + ".")


def group_name(notebook_id):
    """The group of a notebook's sockets; the kernel worker is its only sender."""
    return f"notebook.{notebook_id}"
