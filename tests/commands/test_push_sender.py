"""Push delivery to a device's own endpoint: only HTTPS to public addresses, and the request
goes to the address that was checked (no second DNS lookup that could rebind it)."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from commands.adapters import push
from commands.adapters.push import HttpPushSender, UnsafeEndpointError, check_endpoint
from domain.push import PushDevice

NOW = datetime(2026, 3, 1, tzinfo=UTC)
PUBLIC = "93.184.216.34"


def device(token: str) -> PushDevice:
    return PushDevice(
        device_id="phone",
        name="Phone",
        platform="android",
        push_token=token,
        public_key="k" * 43,
        app_version="1.0",
        created_at=NOW,
        updated_at=NOW,
    )


_real_getaddrinfo = socket.getaddrinfo


class Dns:
    """Scripted answers: each lookup of a name takes the next one (the last one repeats)."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []

    def __setitem__(self, host: str, answers: list[list[str]]) -> None:
        self.answers[host] = list(answers)

    def getaddrinfo(self, host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if not host.endswith(".example"):  # an address literal, as the HTTP client resolves it
            return _real_getaddrinfo(host, port, *args, **kwargs)
        self.lookups.append(host)
        queue = self.answers.get(host)
        if not queue:
            raise socket.gaierror("no such host")
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Dns:
    scripted = Dns()
    monkeypatch.setattr(push.socket, "getaddrinfo", scripted.getaddrinfo)
    return scripted


class Recorder:
    def __init__(self, status: int = 201) -> None:
        self.requests: list[httpx.Request] = []
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status)


def sender(recorder: Recorder, *, allow_private: bool = False) -> HttpPushSender:
    return HttpPushSender(
        None, allow_private=allow_private, transport=httpx.MockTransport(recorder)
    )


def test_a_public_endpoint_is_called_at_the_checked_address_with_its_own_host_name(
    dns: Dns,
) -> None:
    dns["push.example"] = [[PUBLIC]]
    recorder = Recorder()
    assert sender(recorder).send(device("https://push.example/up/abc?x=1"), {"challenge_id": "c"})
    [request] = recorder.requests
    assert str(request.url) == f"https://{PUBLIC}/up/abc?x=1"
    assert request.headers["host"] == "push.example"
    assert request.extensions["sni_hostname"] == "push.example"  # TLS verified for the name
    assert json.loads(request.content) == {"challenge_id": "c"}


def test_dns_rebinding_after_the_check_cannot_redirect_the_push(
    dns: Dns,
) -> None:
    """The first answer is public, every later one loopback: only one lookup happens."""
    dns["rebind.example"] = [[PUBLIC], ["127.0.0.1"]]
    recorder = Recorder()
    assert sender(recorder).send(device("https://rebind.example:8443/p"), {})
    assert dns.lookups == ["rebind.example"]
    assert recorder.requests[0].url.host == PUBLIC
    assert recorder.requests[0].url.port == 8443
    assert recorder.requests[0].headers["host"] == "rebind.example:8443"


def test_an_international_name_is_resolved_and_presented_in_its_idna_form(dns: Dns) -> None:
    dns["xn--bcher-kva.example"] = [[PUBLIC]]
    recorder = Recorder()
    assert sender(recorder).send(device("https://user:pw@bücher.example:8443/p#f"), {})
    [request] = recorder.requests
    assert dns.lookups == ["xn--bcher-kva.example"]
    assert str(request.url) == f"https://{PUBLIC}:8443/p"  # no credentials, no fragment
    assert request.headers["host"] == "xn--bcher-kva.example:8443"
    assert request.extensions["sni_hostname"] == "xn--bcher-kva.example"


def test_an_ipv6_endpoint_is_pinned_in_brackets(dns: Dns) -> None:
    dns["v6.example"] = [["2606:4700::1111"]]
    recorder = Recorder()
    assert sender(recorder).send(device("https://v6.example/p"), {})
    assert recorder.requests[0].url.host == "2606:4700::1111"


@pytest.mark.parametrize(
    "addresses",
    [
        ["127.0.0.1"],
        ["10.1.2.3"],
        ["169.254.169.254"],  # cloud metadata
        ["100.64.0.1"],
        ["::1"],
        ["::ffff:127.0.0.1"],
        ["64:ff9b::7f00:1"],  # NAT64 of 127.0.0.1
        ["2002:a00:1::1"],  # 6to4 of 10.0.0.1
        [PUBLIC, "192.168.1.1"],  # one private answer among public ones
    ],
)
def test_an_endpoint_resolving_into_a_private_network_is_never_called(
    dns: Dns, addresses: list[str]
) -> None:
    dns["inside.example"] = [addresses]
    recorder = Recorder()
    assert not sender(recorder).send(device("https://inside.example/p"), {})
    assert recorder.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://push.example/p",
        "https://push.example:99999/p",
        "https://unknown.example/p",
        "https://[::1/p",
        "https:///p",
    ],
)
def test_plain_http_bad_ports_and_unknown_hosts_are_refused(dns: Dns, url: str) -> None:
    dns["push.example"] = [[PUBLIC]]
    with pytest.raises(UnsafeEndpointError):
        check_endpoint(url, allow_private=False)
    recorder = Recorder()
    assert not sender(recorder).send(device(url), {})
    assert recorder.requests == []


def test_private_endpoints_are_called_as_written_when_allowed() -> None:
    recorder = Recorder()
    assert sender(recorder, allow_private=True).send(device("http://127.0.0.1:8080/p"), {})
    assert str(recorder.requests[0].url) == "http://127.0.0.1:8080/p"


def test_a_redirect_is_a_refusal_and_is_not_followed(dns: Dns) -> None:
    dns["push.example"] = [[PUBLIC]]
    recorder = Recorder(status=307)
    assert not sender(recorder).send(device("https://push.example/p"), {})
    assert len(recorder.requests) == 1


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(UTC) - timedelta(minutes=5))
        .not_valid_after(datetime.now(UTC) + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_the_pinned_request_still_verifies_tls_for_the_host_name(
    dns: Dns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over real TLS: connecting to the checked address, the certificate is verified against
    the endpoint's name (a certificate for another name is refused)."""
    cert, key = _self_signed(tmp_path, "push.example")
    received: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append((self.headers["Host"], self.rfile.read(length).decode()))
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server.socket = server_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        monkeypatch.setattr(push, "_is_public", lambda _address: True)  # loopback stands in
        dns["push.example"] = [["127.0.0.1"]]
        dns["other.example"] = [["127.0.0.1"]]
        client_context = ssl.create_default_context(cafile=str(cert))
        transport = httpx.AsyncHTTPTransport(verify=client_context)
        tls_sender = HttpPushSender(None, transport=transport)
        assert tls_sender.send(device(f"https://push.example:{port}/up"), {"challenge_id": "c"})
        assert received == [(f"push.example:{port}", '{"challenge_id":"c"}')]
        assert not tls_sender.send(device(f"https://other.example:{port}/up"), {})
        assert len(received) == 1
    finally:
        server.shutdown()
        server.server_close()


class Dripper:
    """A push endpoint on loopback that answers very slowly, a byte at a time: each read
    completes well within httpx's 3 s read timeout, so only a deadline on the whole delivery
    ends it. `part` is what drips: the response headers, or (after a complete head) the body."""

    def __init__(self, part: str) -> None:
        self.stop = threading.Event()
        dripper = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(1)
                with contextlib.suppress(OSError):
                    self.request.recv(65536)
                    if part == "headers":
                        self.request.sendall(b"HTTP/1.1 201 Created\r\n")
                        while not dripper.stop.wait(0.2):
                            self.request.sendall(b"X-Slow: 1\r\n")
                    else:
                        self.request.sendall(
                            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                        )
                        while not dripper.stop.wait(0.2):
                            self.request.sendall(b"1\r\nx\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/up"

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def dripping() -> Iterator[Callable[[str], Dripper]]:
    opened: list[Dripper] = []

    def open_one(part: str) -> Dripper:
        opened.append(Dripper(part))
        return opened[-1]

    yield open_one
    for dripper in opened:
        dripper.close()


def test_an_endpoint_that_drips_its_headers_fails_at_the_deadline_and_the_others_still_count(
    dripping: Callable[[str], Dripper],
) -> None:
    """A push endpoint is the device owner's to choose: one that never finishes answering
    must not hold the request's worker thread (a few accounts would hold all of them)."""
    sender = HttpPushSender(None, allow_private=True, deadline=1.0)
    started = time.monotonic()
    delivered = sender.send_all([device(dripping("headers").url), device(dripping("body").url)], {})
    assert time.monotonic() - started < 2.0
    # The one whose status line and headers came at once was accepted; the body is never read.
    assert delivered == [False, True]
    assert sender.send_all([], {}) == []


def test_a_host_name_that_resolves_too_slowly_fails_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def slow_lookup(*_: Any, **__: Any) -> list[Any]:
        time.sleep(3)
        raise socket.gaierror("too late")

    monkeypatch.setattr(push.socket, "getaddrinfo", slow_lookup)
    started = time.monotonic()
    delivered = HttpPushSender(None, deadline=0.5).send_all(
        [device("https://slow-dns.example/up")], {}
    )
    assert delivered == [False]
    assert time.monotonic() - started < 1.5


@pytest.fixture(autouse=True)
def no_slow_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no host name held against it (the real list is module-wide)."""
    monkeypatch.setattr(push, "_SLOW_HOSTS", push._SlowHosts(60.0, 1024))


class BlackholeDns:
    """Names starting with `slow` sit under a nameserver that never answers: their lookups
    hang until `release` (the system resolver's own timeout, much later); others are public."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lookups: list[str] = []

    def getaddrinfo(self, host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        self.lookups.append(host)
        if host.startswith("slow"):
            self.release.wait(10)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, port))]


@pytest.fixture
def blackhole(monkeypatch: pytest.MonkeyPatch) -> Iterator[BlackholeDns]:
    scripted = BlackholeDns()
    monkeypatch.setattr(push.socket, "getaddrinfo", scripted.getaddrinfo)
    yield scripted
    scripted.release.set()  # frees the resolver threads the test left hanging


def test_one_delivery_cannot_take_every_resolver_thread(blackhole: BlackholeDns) -> None:
    """An account's 10 devices (MAX_PUSH_DEVICES) under a nameserver that never answers hold
    at most LOOKUPS_PER_DELIVERY of the shared resolver threads, during the delivery and after
    its deadline abandoned them: another user's push still resolves and is delivered."""
    attacker = HttpPushSender(None, transport=httpx.MockTransport(Recorder()), deadline=1.0)
    slow = [device(f"https://slow{i}.attacker.example/up") for i in range(10)]
    attack = threading.Thread(target=attacker.send_all, args=(slow, {}))
    attack.start()
    time.sleep(0.3)
    recorder = Recorder()
    victim = HttpPushSender(None, transport=httpx.MockTransport(recorder), deadline=1.0)
    started = time.monotonic()
    assert victim.send_all([device("https://push.example.org/up/abc")], {}) == [True]
    assert time.monotonic() - started < 0.5
    attack.join()
    assert victim.send_all([device("https://push.example.org/up/abc")], {}) == [True]
    assert len(recorder.requests) == 2
    # The attacker's other names waited for a slot until the deadline and were never looked up.
    assert sum(host.startswith("slow") for host in blackhole.lookups) == push.LOOKUPS_PER_DELIVERY


def test_a_host_name_whose_lookup_was_abandoned_is_refused_at_once_for_a_while(
    blackhole: BlackholeDns, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(push, "SLOW_LOOKUP_SECONDS", 0.2)
    recorder = Recorder()
    slow_sender = HttpPushSender(None, transport=httpx.MockTransport(recorder), deadline=0.5)
    # Two slow names take this delivery's slots; the public one waits behind them until the
    # deadline: it was never looked up, so it is not held against it.
    waited = ["https://slow1.example/up", "https://slow2.example/up", "https://push.example/up"]
    assert slow_sender.send_all([device(url) for url in waited], {}) == [False, False, False]
    assert blackhole.lookups == ["slow1.example", "slow2.example"]
    started = time.monotonic()
    again = ["https://slow1.example/up", "https://SLOW2.example./up", "https://push.example/up"]
    assert slow_sender.send_all([device(url) for url in again], {}) == [False, False, True]
    assert time.monotonic() - started < 0.3  # refused at once, no deadline waited out
    assert blackhole.lookups == ["slow1.example", "slow2.example", "push.example"]


def test_slow_hosts_are_remembered_for_a_while_and_only_so_many() -> None:
    now = [0.0]
    slow = push._SlowHosts(60.0, 2, clock=lambda: now[0])

    def held() -> list[str]:
        return [host for host in ("a.example", "b.example.", "c.example") if host in slow]

    slow.add("a.example")
    now[0] = 10.0
    slow.add("b.example")  # a trailing dot names the same host
    assert held() == ["a.example", "b.example."]
    now[0] = 20.0
    slow.add("c.example")  # the oldest is forgotten first
    assert held() == ["b.example.", "c.example"]
    now[0] = 70.0
    assert held() == ["c.example"]
    slow.add("b.example")  # remembered anew
    now[0] = 80.0
    assert held() == ["b.example."]
