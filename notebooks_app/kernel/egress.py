"""A notebook's egress allowlist, enforced outside its sandbox (docs/security.md, "Egress").

With `KERNEL_NETWORK=outbound` a notebook whose owner set an allowlist (`api.openai.com:443`,
`*.githubusercontent.com:443`) gets no network interface at all: its sandbox keeps only its own
loopback, and the one way out is this proxy.  It listens on a Unix socket bound into the
sandbox; the execution process forwards `127.0.0.1:3128` there (kernel/egress_forwarder.py) and
sets `HTTP(S)_PROXY`, so `requests`, `urllib`, `httpx`, `pip` and most clients use it.  The
proxy accepts HTTP `CONNECT host:port` (HTTPS and any TLS protocol) for an allowed host and
port only, resolves the name itself and refuses addresses on loopback, link-local, multicast or
unspecified networks (an allowlist cannot reach the server's own services), then relays bytes.
What it does not do: look inside TLS, limit bandwidth, or carry plain-HTTP requests (a
`CONNECT` to port 80 works for clients that tunnel; most send plain HTTP as a proxy request,
which is refused with 403 and a message).

Pure asyncio, no Django: ExecutionHost starts one per notebook process that needs it.
"""
import asyncio
import contextlib
import ipaddress
import logging
import os
import re
import socket

logger = logging.getLogger(__name__)

MAX_ENTRIES = 50
_ENTRY = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*:(\d{1,5})$")
HEADER_LIMIT = 8192
CONNECT_TIMEOUT = 15.0


class AllowlistError(ValueError):
    """An allowlist entry that cannot be used; the message says which and why."""


def parse_allowlist(items):
    """`items` (a list of strings, or text with one entry a line) as the stored list of
    "host:port" entries ("*.example.com:443" allows its subdomains). AllowlistError when bad."""
    if isinstance(items, str):
        items = [line.split("#", 1)[0].strip() for line in items.splitlines()]
        items = [line for line in items if line]
    if not isinstance(items, (list, tuple)):
        raise AllowlistError("the allowlist must be a list of host:port entries")
    if len(items) > MAX_ENTRIES:
        raise AllowlistError(f"{len(items)} entries; at most {MAX_ENTRIES}")
    result = []
    for item in items:
        if not isinstance(item, str):
            raise AllowlistError("each entry must be text such as 'api.openai.com:443'")
        entry = item.strip().lower()
        match = _ENTRY.match(entry)
        if not match or len(entry) > 260:
            raise AllowlistError(f"{item[:80]!r} is not host:port (e.g. 'api.openai.com:443', '*.example.com:443'); IP addresses are not accepted")
        host = entry.rpartition(":")[0].removeprefix("*.")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            raise AllowlistError(f"{item[:80]!r}: give a host name, not an IP address (names are what TLS checks)")
        port = int(match.group(6))
        if not 1 <= port <= 65535:
            raise AllowlistError(f"{item[:80]!r}: the port must be between 1 and 65535")
        if entry not in result:
            result.append(entry)
    return result


def allowed(allowlist, host, port):
    host = host.lower().rstrip(".")
    for entry in allowlist:
        pattern, _, entry_port = entry.rpartition(":")
        if int(entry_port) != port:
            continue
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def public_address(address):
    ip = ipaddress.ip_address(address)
    return not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved)


class EgressProxy:
    def __init__(self, allowlist, socket_path):
        self.allowlist = list(allowlist)
        self.socket_path = str(socket_path)
        self.server = None
        self.refused = []  # (host, port, why), newest last (kept short; for tests and logs)

    async def start(self):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        self.server = await asyncio.start_unix_server(self._serve, path=self.socket_path)
        os.chmod(self.socket_path, 0o666)  # the sandbox's uid connects to it
        return self

    async def close(self):
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
            self.server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    async def _serve(self, reader, writer):
        upstream = None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            if len(head) > HEADER_LIMIT:
                return await self._answer(writer, 431, "request header too large")
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, _, rest = request_line.partition(" ")
            target = rest.rsplit(" ", 1)[0]
            if method.upper() != "CONNECT":
                return await self._answer(writer, 403, "only HTTPS (CONNECT) goes through this notebook's egress allowlist")
            host, _, port_text = target.rpartition(":")
            host = host.strip("[]")
            if not port_text.isdigit():
                return await self._answer(writer, 400, "CONNECT needs host:port")
            port = int(port_text)
            if not allowed(self.allowlist, host, port):
                self._refuse(host, port, "not in the allowlist")
                return await self._answer(writer, 403, f"{host}:{port} is not in this notebook's egress allowlist")
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                return await self._answer(writer, 502, f"cannot resolve {host}: {exc}")
            addresses = [info[4][0] for info in infos if public_address(info[4][0])]
            if not addresses:
                self._refuse(host, port, "resolves to a private address")
                return await self._answer(writer, 403, f"{host} resolves to an address notebooks may not reach")
            upstream_reader, upstream = await asyncio.wait_for(asyncio.open_connection(addresses[0], port), CONNECT_TIMEOUT)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, upstream), _pipe(upstream_reader, writer))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError, OSError):
            pass
        finally:
            for stream in (writer, upstream):
                if stream is not None:
                    with contextlib.suppress(Exception):
                        stream.close()

    def _refuse(self, host, port, why):
        logger.info("egress refused: %s:%s (%s)", host, port, why)
        self.refused = (self.refused + [(host, port, why)])[-20:]

    async def _answer(self, writer, status, text):
        body = f"{text}\n".encode()
        reason = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large", 502: "Bad Gateway"}.get(status, "Error")
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()


async def _pipe(source, sink):
    try:
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    finally:
        with contextlib.suppress(Exception):
            sink.write_eof()
