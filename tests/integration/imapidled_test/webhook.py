"""An HTTP receiver for webhook tests, and a Standard Webhooks signature verifier.

The receiver records every request and answers from a programmable queue; down() closes the
listening socket and every open connection, up() binds the same port again.
"""
import base64
import dataclasses
import hashlib
import hmac
import http.server
import json
import socket
import threading
import time

from . import util


# -- Standard Webhooks ----------------------------------------------------------------------

def webhook_key(secret):
    """The HMAC key for a secret: `whsec_<base64>` is decoded, any other string used as is."""
    if isinstance(secret, bytes):
        return secret
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return secret.encode()


def sign(secret, msg_id, timestamp, body):
    """The `webhook-signature` value: `v1,` + base64(HMAC-SHA256(key, id.timestamp.body))."""
    if isinstance(body, str):
        body = body.encode()
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(webhook_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_problem(secret, headers, body, tolerance=None, now=None):
    """Why a request's signature does not verify, or None when it does. headers: any mapping
    (names case-insensitive); tolerance: maximum |now - webhook-timestamp| in seconds."""
    h = {k.lower(): v for k, v in dict(headers).items()}
    msg_id, ts, sigs = (h.get("webhook-id"), h.get("webhook-timestamp"),
                        h.get("webhook-signature"))
    if not msg_id or not ts or not sigs:
        return f"missing header(s): id={msg_id!r} timestamp={ts!r} signature={sigs!r}"
    if not ts.isdigit():
        return f"webhook-timestamp {ts!r} is not Unix seconds"
    if tolerance is not None and abs((now or time.time()) - int(ts)) > tolerance:
        return f"webhook-timestamp {ts} is more than {tolerance} s away from now"
    expected = sign(secret, msg_id, ts, body)
    for candidate in sigs.split(" "):
        if candidate.startswith("v1,") and hmac.compare_digest(candidate, expected):
            return None
    return f"no matching v1 signature in {sigs!r}"


def verify_signature(secret, headers, body, tolerance=None, now=None):
    return signature_problem(secret, headers, body, tolerance, now) is None


# -- the receiver --------------------------------------------------------------------------

@dataclasses.dataclass
class Request:
    method: str
    path: str
    headers: dict        # lower-case name -> value (the last one when repeated)
    header_list: list    # [(name, value)] as received
    body: bytes
    time: float          # time.monotonic() when the request line and headers had arrived
    client: tuple        # (ip, port)

    def json(self):
        return json.loads(self.body)

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def verify(self, secret, tolerance=None):
        return verify_signature(secret, self.headers, self.body, tolerance)


@dataclasses.dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict = dataclasses.field(default_factory=dict)
    delay: float = 0.0   # seconds to wait before answering (cut short by down()/close())
    drop: bool = False   # close the connection without answering


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "imapidled-test-receiver"

    def log_message(self, fmt, *args):
        pass

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _serve(self):
        receiver = self.server.receiver
        t = time.monotonic()
        if self.headers.get("Expect", "").lower() == "100-continue":
            pass  # BaseHTTPRequestHandler already answered 100 Continue
        body = self._read_body()
        req = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                      list(self.headers.items()), body, t, self.client_address)
        resp = receiver._record(req)
        if resp.delay and receiver._stopping.wait(resp.delay):
            resp = Response(drop=True)
        if resp.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        payload = resp.body.encode() if isinstance(resp.body, str) else resp.body
        self.send_response(resp.status)
        for k, v in resp.headers.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


class _Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, addr, receiver):
        self.receiver = receiver
        self.connections = set()
        self.conn_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def process_request(self, request, client_address):
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self):
        with self.conn_lock:
            conns = list(self.connections)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class HttpReceiver:
    """Records requests; answers from a queue (respond()), else the default response."""

    name = "http-receiver"

    def __init__(self, host="127.0.0.1", port=0):
        self.host, self.port = host, port
        self.default = Response(200)
        self._queue = []
        self._requests = []
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._server = None
        self._thread = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self):
        self.up()
        util.register(self)
        return self

    @property
    def is_up(self):
        return self._server is not None

    def up(self):
        """Listen (again) on the same port."""
        if self._server is not None:
            return
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name=f"http-receiver:{self.port}", daemon=True)
        self._thread.start()

    def down(self):
        """Stop listening and cut every open connection: clients get connection refused."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.drop_connections()
        self._thread.join(5)
        self._server = self._thread = None

    def close(self):
        util.unregister(self)
        self.down()

    def failure_report(self):
        with self._cond:
            reqs = list(self._requests)
        lines = [f"--- http receiver {self.url()}: {len(reqs)} request(s) ---"]
        for r in reqs[-10:]:
            lines.append(f"{r.method} {r.path} {r.body[:200]!r}")
        return "\n".join(lines)

    # -- programming answers -------------------------------------------------------------

    def url(self, path="/hook"):
        return f"http://{self.host}:{self.port}{path}"

    def respond(self, status=200, body=b"", headers=None, retry_after=None, delay=0.0,
                drop=False, times=1):
        """Queue the answer for the next request(s); later ones fall back to the default."""
        h = dict(headers or {})
        if retry_after is not None:
            h["Retry-After"] = str(retry_after)
        with self._cond:
            for _ in range(times):
                self._queue.append(Response(status, body, h, delay, drop))

    def set_default(self, status=200, body=b"", headers=None, retry_after=None, delay=0.0,
                    drop=False):
        h = dict(headers or {})
        if retry_after is not None:
            h["Retry-After"] = str(retry_after)
        with self._cond:
            self.default = Response(status, body, h, delay, drop)

    def _record(self, req):
        with self._cond:
            self._requests.append(req)
            resp = self._queue.pop(0) if self._queue else self.default
            self._cond.notify_all()
        return resp

    # -- what arrived --------------------------------------------------------------------

    @property
    def requests(self):
        with self._cond:
            return list(self._requests)

    def wait_for(self, n=1, timeout=10.0):
        """Wait until at least n requests have arrived in all; returns all of them."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"{len(self._requests)} of {n} requests after {timeout} s")
            return list(self._requests)
