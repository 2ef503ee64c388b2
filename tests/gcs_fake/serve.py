"""A stand-in for Google Cloud Storage (the JSON API at
https://storage.googleapis.com/storage/v1/ and the XML API's object PUT/GET
at https://storage.googleapis.com/BUCKET/KEY): PyPI's `gcp-storage-emulator`,
in memory, with one thing added for the tests: every request must carry
`Authorization: Bearer <token>` (the token the fake OAuth2 endpoint of
tests/gcp_fake/server.py issues), else it gets 401 as GCS answers a missing
or wrong token. The emulator itself checks no credentials.

Usage: serve.py PORT_FILE TOKEN
Binds 127.0.0.1 on a free port and writes the port to PORT_FILE.
"""

import http
import socket
import sys
import time

from gcp_storage_emulator import server as emulator


def main():
    port_file, token = sys.argv[1], sys.argv[2]
    expected = "Bearer " + token

    def checked(method):
        original = getattr(emulator.RequestHandler, method)

        def handler(self):
            if self.headers.get("Authorization") != expected:
                self.send_response(http.HTTPStatus.UNAUTHORIZED)
                body = b'{"error": {"code": 401, "message": "Invalid Credentials"}}'
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            original(self)

        setattr(emulator.RequestHandler, method, handler)

    for method in ("do_GET", "do_POST", "do_PUT", "do_DELETE", "do_PATCH"):
        checked(method)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = emulator.create_server("127.0.0.1", port, in_memory=True)
    srv.start()
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    import os

    os.replace(port_file + ".tmp", port_file)
    try:
        while True:
            time.sleep(3600)
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
