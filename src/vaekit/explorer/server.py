"""Serve one explorer page on 127.0.0.1, and nothing else from its folder."""

from __future__ import annotations

import http.server
import sys
from functools import partial
from pathlib import Path
from typing import Any

from vaekit.errors import VaekitError

HOST = "127.0.0.1"


class PageHandler(http.server.BaseHTTPRequestHandler):
    """Answers GET / and GET /<name> with the page; 404 for any other path."""

    def __init__(self, *args: Any, page: Path, **kwargs: Any):
        self.page = page
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        self.send_page(with_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self.send_page(with_body=False)

    def send_page(self, with_body: bool) -> None:
        port = self.server.server_address[1]
        if self.headers.get("Host") not in (f"{HOST}:{port}", f"localhost:{port}"):
            # a web page whose name was made to resolve to 127.0.0.1 (DNS rebinding) sends its own name here
            self.send_error(403, "the explorer server answers requests for 127.0.0.1 and localhost only")
            return
        path = self.path.split("?", 1)[0]
        if path not in ("/", f"/{self.page.name}"):
            self.send_error(404, "the explorer server serves only its page")
            return
        body = self.page.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        pass  # the terminal shows the address and stays quiet


def make_server(path: str | Path, port: int = 8000) -> http.server.ThreadingHTTPServer:
    """A server for the page at path on 127.0.0.1:port (port 0 picks a free one); not yet serving."""
    page = Path(path).resolve()
    if not page.is_file():
        raise VaekitError(f"no explorer page at {path}")
    try:
        return http.server.ThreadingHTTPServer((HOST, port), partial(PageHandler, page=page))
    except OSError as error:
        raise VaekitError(f"cannot serve on {HOST}:{port}: {error.strerror or error}; choose another --port") from None


def page_url(server: http.server.HTTPServer, path: str | Path) -> str:
    return f"http://{HOST}:{server.server_address[1]}/{Path(path).name}"


def serve(path: str | Path, port: int = 8000) -> None:
    """Serve the page on 127.0.0.1 until Ctrl-C, printing its address."""
    server = make_server(path, port)
    print(f"vaekit: serving the explorer at {page_url(server, path)} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("vaekit: stopped serving", file=sys.stderr)
    finally:
        server.server_close()
