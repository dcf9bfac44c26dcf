"""HTTP transport of the fake apiserver (``http.server.ThreadingHTTPServer``, HTTP/1.1 keep-alive).

JSON bodies are sent with ``Content-Length``; watch and ``follow=true`` log streams use
chunked transfer encoding, one JSON event per line for watches.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import ssl
import struct
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from . import errors as E
from .api import Api, Request, Response, StreamResponse
from .requestlog import RequestLog

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server_version = "kube-fake-apiserver"
    sys_version = ""
    server: "FakeHTTPServer"

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature from the base class
        log.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.settimeout(10)
            try:
                self.connection.do_handshake()  # here, in the request's thread, not in accept()
            finally:
                self.connection.settimeout(None)

    def _client_gone(self) -> bool:
        if isinstance(self.connection, ssl.SSLSocket):
            return False  # TLS cannot peek; a stream to a client that left ends at its timeout
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (OSError, ValueError):
            return True

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        for requests in self.server.request_logs:
            requests.append((self.command, parts.path))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Request(self.command, parts.path, query, headers, body)
        try:
            resp = self.server.api.handle(req)
        except E.ConnectionDropped:
            self._reset_connection()
            return
        except E.ApiError as err:
            resp = Response(err.code, err.status(), dict(err.headers))
        except Exception as exc:  # pragma: no cover - bug in the fake: report like the apiserver would
            log.exception("internal error handling %s %s", self.command, self.path)
            resp = Response(500, E.status_object(500, "InternalError", f"Internal error occurred: {exc}"))
        try:
            if isinstance(resp, StreamResponse):
                self._stream(resp)
            else:
                self._send(resp)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout, OSError):
            self.close_connection = True

    def _reset_connection(self) -> None:
        """Close with a TCP RST (SO_LINGER 0): the client sees 'connection reset by peer'."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _common_headers(self, headers: dict[str, str]) -> None:
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        for key, value in headers.items():
            self.send_header(key, value)

    def _send(self, resp: Response) -> None:
        if isinstance(resp.body, (dict, list)):
            payload = json.dumps(resp.body, separators=(",", ":")).encode()
            ctype = "application/json"
        else:
            payload = str(resp.body).encode()
            ctype = resp.content_type
        self.send_response(resp.code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self._common_headers(resp.headers)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _stream(self, resp: StreamResponse) -> None:
        self.send_response(resp.code)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self._common_headers(resp.headers)
        self.end_headers()
        self.wfile.flush()
        chunks = resp.chunks(self._client_gone)
        try:
            for chunk in chunks:
                if not chunk:
                    continue
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            chunks.close()


class FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: Api, requests: RequestLog, *,
                 tls: ssl.SSLContext | None = None, also_log: RequestLog | None = None):
        self.api = api
        self.requests = requests
        self.request_logs = (requests,) if also_log is None else (requests, also_log)
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        super().__init__(address, _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def process_request(self, request, client_address) -> None:
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
