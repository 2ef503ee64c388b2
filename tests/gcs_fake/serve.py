"""A stand-in for Google Cloud Storage (the JSON API at
https://storage.googleapis.com/storage/v1/ and the XML API at
https://storage.googleapis.com/BUCKET/KEY): PyPI's `gcp-storage-emulator`,
in memory, serving the JSON API, with two things added for the tests:

- the XML API calls object_store's GCS client makes (list V2, object PUT,
  GET, HEAD, DELETE, multipart uploads), which the emulator does not serve:
  xml_api.py beside this file, a fake of those calls on the emulator's
  storage;
- every request must carry `Authorization: Bearer <token>` (the token the
  fake OAuth2 endpoint of tests/gcp_fake/server.py issues), else it gets
  401 as GCS answers a missing or wrong token. The emulator itself checks
  no credentials.

Usage: serve.py PORT_FILE TOKEN
Binds 127.0.0.1 on a free port and writes the port to PORT_FILE.
"""

import http
import logging
import socket
import sys
import time

from gcp_storage_emulator import server as emulator

import xml_api


def main():
    port_file, token = sys.argv[1], sys.argv[2]
    # The access log (one line a request) goes to stderr: the server's log.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    expected = "Bearer " + token

    def checked(method):
        original = getattr(emulator.RequestHandler, "do_" + method, None)
        xml = xml_api.is_xml_request

        def handler(self):
            if self.headers.get("Authorization") != expected:
                self.send_response(http.HTTPStatus.UNAUTHORIZED)
                if xml(self.path):
                    body = xml_api.error_body(
                        "AuthenticationRequired", "Authentication required.")
                    self.send_header("Content-Type", "application/xml; charset=UTF-8")
                else:
                    body = b'{"error": {"code": 401, "message": "Invalid Credentials"}}'
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(body)
                return
            if xml(self.path):
                xml_api.handle(self, method)
            elif original is not None:
                original(self)
            else:
                self.send_error(http.HTTPStatus.NOT_IMPLEMENTED)

        setattr(emulator.RequestHandler, "do_" + method, handler)

    for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"):
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
