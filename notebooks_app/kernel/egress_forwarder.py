"""Inside the sandbox: `127.0.0.1:3128` forwarded to the egress proxy's Unix socket (kernel/
egress.py), and the proxy variables set, so HTTP clients find the one way out.

The forwarder only moves bytes; every decision is the proxy's, outside the sandbox, so code that
stops or replaces it gains nothing: the sandbox has no other route.

Runs inside the sandbox: no Django, standard library only.
"""
import os
import socket
import threading

SOCKET = os.environ.get("NOTEBOOK_EGRESS_SOCKET", "")
PORT = 3128


def install():
    if not SOCKET or not os.path.exists(SOCKET):
        return
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", PORT))
    except OSError:
        return
    listener.listen(64)
    proxy = f"http://127.0.0.1:{PORT}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ[name] = proxy
    os.environ.pop("NO_PROXY", None)
    os.environ.pop("no_proxy", None)
    threading.Thread(target=_accept, args=(listener,), name="egress-forwarder", daemon=True).start()


def _accept(listener):
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(SOCKET)
        except OSError:
            client.close()
            continue
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(source, sink), name="egress-pipe", daemon=True).start()


def _pipe(source, sink):
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for end in (sink,):
            try:
                end.shutdown(socket.SHUT_WR)
            except OSError:
                pass
