"""A notebook's egress allowlist (docs/security.md#egress): entries checked, the owner's form,
and the proxy outside the sandbox letting through only what is listed."""
import asyncio
import os
import socket
import tempfile

import pytest

from notebooks_app.kernel.egress import AllowlistError, EgressProxy, allowed, parse_allowlist, public_address
from notebooks_app.models import EVENT_EGRESS, NotebookEvent


def test_entries_are_checked():
    assert parse_allowlist(" API.openai.com:443 \n*.githubusercontent.com:443\n# a comment\n") == ["api.openai.com:443", "*.githubusercontent.com:443"]
    for bad in ("api.openai.com", "1.2.3.4:443", "http://x.com:443", "x.com:0", "x.com:99999", "*.:443", "a b:1"):
        with pytest.raises(AllowlistError):
            parse_allowlist([bad])
    with pytest.raises(AllowlistError, match="at most 50"):
        parse_allowlist([f"h{i}.com:443" for i in range(51)])


def test_what_an_allowlist_allows():
    entries = ["api.openai.com:443", "*.example.com:443"]
    assert allowed(entries, "api.openai.com", 443) and allowed(entries, "API.OpenAI.com.", 443)
    assert not allowed(entries, "api.openai.com", 80) and not allowed(entries, "openai.com", 443)
    assert allowed(entries, "a.b.example.com", 443) and not allowed(entries, "example.com", 443) and not allowed(entries, "badexample.com", 443)
    assert not public_address("127.0.0.1") and not public_address("::1") and not public_address("169.254.169.254") and public_address("151.101.0.223")


@pytest.mark.django_db
def test_the_owner_sets_it_and_others_cannot(client, notebook, users):
    client.force_login(users["alice"])
    response = client.post(f"/notebooks/{notebook.pk}/egress/", {"allowlist": "api.openai.com:443\n*.example.com:443"})
    assert response.status_code == 302
    notebook.refresh_from_db()
    assert notebook.egress_allowlist == ["api.openai.com:443", "*.example.com:443"]
    assert NotebookEvent.objects.filter(notebook=notebook, kind=EVENT_EGRESS).count() == 1
    page = client.get(f"/notebooks/{notebook.pk}/").content.decode()
    assert "api.openai.com:443\n*.example.com:443" in page
    response = client.post(f"/notebooks/{notebook.pk}/egress/", {"allowlist": "http://evil:1"})
    assert response.status_code == 400 and "is not host:port" in response.content.decode()
    notebook.refresh_from_db()
    assert notebook.egress_allowlist == ["api.openai.com:443", "*.example.com:443"]
    client.force_login(users["bob"])  # an editor is not the owner
    assert client.post(f"/notebooks/{notebook.pk}/egress/", {"allowlist": ""}).status_code == 403
    notebook.refresh_from_db()
    assert len(notebook.egress_allowlist) == 2


async def proxied(socket_path, request):
    reader, writer = await asyncio.open_unix_connection(socket_path)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    return answer.decode("latin-1")


async def test_the_proxy_refuses_what_is_not_listed_and_private_addresses():
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        proxy = await EgressProxy([f"localhost:{port}", "api.openai.com:443"], os.path.join(folder, "egress.sock")).start()
        try:
            assert "403" in await proxied(proxy.socket_path, b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n")
            # Listed, but loopback: an allowlist never reaches the server's own services.
            assert "403" in await proxied(proxy.socket_path, f"CONNECT localhost:{port} HTTP/1.1\r\n\r\n".encode())
            assert "only HTTPS" in await proxied(proxy.socket_path, b"GET http://api.openai.com/ HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
            assert [why for _, _, why in proxy.refused] == ["not in the allowlist", "resolves to a private address"]
        finally:
            await proxy.close()
            listener.close()


def reachable(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not reachable("pypi.org", 443), reason="needs pypi.org:443, the one public host this machine reaches")
async def test_a_sandbox_reaches_only_its_allowlist():
    from notebooks_app.kernel.runner import Runner
    from notebooks_app.kernel.sandbox import SandboxConfig

    runner = Runner(notebook_id="egress-test", sandbox=SandboxConfig(network="outbound"))
    runner.egress_allowlist = ("pypi.org:443",)
    code = (
        "import socket, urllib.request\n"
        "seen = []\n"
        "for url in ('https://pypi.org/simple/six/', 'https://files.pythonhosted.org/'):\n"
        "    try:\n        seen.append(urllib.request.urlopen(url, timeout=15).status)\n"
        "    except OSError as exc:\n        seen.append(str(exc)[:60])\n"
        "try:\n    socket.create_connection(('1.1.1.1', 443), timeout=3)\n    seen.append('direct')\n"
        "except OSError as exc:\n    seen.append(exc.errno)\n"
        "seen"
    )
    try:
        await runner.start()
        result = await runner.run("c1", code)
    finally:
        await runner.close()
    assert result.status == "success", result.error
    text = result.outputs[0]["data"]
    assert text.startswith("[200, '<urlopen error Tunnel connection failed: 403 Forbidden>', 101]"), text  # ENETUNREACH
