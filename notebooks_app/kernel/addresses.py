"""Where kernel messages and notebook events travel: the names of the kernel channels and of
a notebook's group, shared by the web side (kernel_client.py) and the kernel worker.

A fleet (settings.KERNEL_FLEET, "kernel") spreads notebooks over a fixed number of virtual shards
(settings.KERNEL_VSHARDS) by a stable hash of their id; each shard has its own channel,
`<fleet>.<shard>`, read by whichever worker holds the shard's lease (kernel/fleet.py), and the
fleet's own name is the channel every worker reads too (pings).  Pure names, no I/O and no Django.
"""
import zlib

KERNEL_CHANNEL = "kernel"


def shard_of(notebook_id, shards):
    """The virtual shard of a notebook: the same on every process, whatever worker holds it."""
    return zlib.crc32(str(notebook_id).encode()) % max(1, shards)


def shard_channel(shard, fleet=KERNEL_CHANNEL):
    return f"{fleet}.{shard}"


def shard_channels(shards, fleet=KERNEL_CHANNEL):
    """Every shard channel of the fleet: <fleet>.0 .. <fleet>.K-1."""
    return [shard_channel(k, fleet) for k in range(max(1, shards))]


def kernel_channel(notebook_id, shards, fleet=KERNEL_CHANNEL):
    """The one channel a notebook's messages go to."""
    return shard_channel(shard_of(notebook_id, shards), fleet)


def is_kernel_channel(name, fleet=KERNEL_CHANNEL):
    return name == fleet or name.startswith(fleet + ".")


def group_name(notebook_id):
    """The group of a notebook's sockets; the kernel worker is its only sender."""
    return f"notebook.{notebook_id}"
