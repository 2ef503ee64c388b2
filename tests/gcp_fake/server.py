"""A fake of Google's OAuth2 token endpoint (`POST https://oauth2.googleapis.com/token`,
the service-account JWT-bearer grant) and of the GCE/GKE metadata server's token
and project paths (`http://169.254.169.254/computeMetadata/v1/...`), for the tests
of environment-gcp. Not Google: it speaks their wire format closely enough.

Token endpoint: the form's `assertion` must be an RS256 JWT whose signature verifies
(with `openssl dgst -sha256 -verify`) against the public key PUBLIC_PEM, whose `iss`
is CLIENT_EMAIL, whose `aud` is the token endpoint's URL and that has not expired;
otherwise 400 `{"error": "invalid_grant", "error_description": ...}` as Google
answers (`Invalid JWT Signature.`). A good one gets `{"access_token": TOKEN,
"expires_in": 3599, "token_type": "Bearer"}`. Each grant is counted in COUNT_FILE.

Metadata server: with `Metadata-Flavor: Google` only (else 403, as Google's),
`instance/service-accounts/default/token` and `project/project-id`.

Artifact Registry's API (`GET https://artifactregistry.googleapis.com/v1/projects/P/
locations/L/repositories/R`, what registry-gcr's `verify` asks): with
`Authorization: Bearer TOKEN` only (else 401 `UNAUTHENTICATED`, as Google's
JSON error); the repositories that exist are those named `launch` in any location
of PROJECT (`fake-project`), answered as Google does (`name`, `format: DOCKER`,
...); any other is 404 `NOT_FOUND` ("Requested entity was not found.").

Usage: server.py PUBLIC_PEM CLIENT_EMAIL TOKEN COUNT_FILE; prints the port.
"""

import base64
import json
import subprocess
import sys
import tempfile
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PUBLIC_PEM, CLIENT_EMAIL, TOKEN, COUNT_FILE = sys.argv[1:5]
PROJECT = "fake-project"


def b64(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verifies(signing_input, signature):
    with tempfile.NamedTemporaryFile() as data, tempfile.NamedTemporaryFile() as sig:
        data.write(signing_input)
        data.flush()
        sig.write(signature)
        sig.flush()
        done = subprocess.run(
            ["openssl", "dgst", "-sha256", "-verify", PUBLIC_PEM, "-signature", sig.name, data.name],
            capture_output=True,
        )
        return done.returncode == 0


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, kind="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        """The request's body, sent with a content-length or chunked."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length", "0")))

    def refuse(self, why):
        self.answer(400, json.dumps({"error": "invalid_grant", "error_description": why}))

    def do_POST(self):
        if self.path != "/token":
            return self.answer(404, "{}")
        form = urllib.parse.parse_qs(self.body().decode())
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return self.answer(400, json.dumps({"error": "unsupported_grant_type"}))
        try:
            header, claims, signature = form["assertion"][0].split(".")
            head = json.loads(b64(header))
            claim = json.loads(b64(claims))
            sig = b64(signature)
        except Exception:
            return self.refuse("Invalid JWT: Token must be a short-lived token and in a reasonable timeframe")
        if head.get("alg") != "RS256" or not verifies(f"{header}.{claims}".encode(), sig):
            return self.refuse("Invalid JWT Signature.")
        if claim.get("iss") != CLIENT_EMAIL:
            return self.refuse("Invalid grant: account not found")
        port = self.server.server_address[1]
        if claim.get("aud") != f"http://127.0.0.1:{port}/token" or claim.get("exp", 0) < time.time():
            return self.refuse("Invalid JWT: Token must be a short-lived token and in a reasonable timeframe")
        with open(COUNT_FILE, "a") as f:
            f.write("grant\n")
        self.answer(200, json.dumps({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}))

    def google_error(self, code, status, message):
        self.answer(code, json.dumps({"error": {"code": code, "message": message, "status": status}}))

    def repository(self):
        """Artifact Registry's `repositories.get`."""
        if self.headers.get("authorization") != f"Bearer {TOKEN}":
            return self.google_error(
                401, "UNAUTHENTICATED",
                "Request is missing required authentication credential. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential.")
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) != 7 or parts[1] != "projects" or parts[3] != "locations" or parts[5] != "repositories":
            return self.google_error(404, "NOT_FOUND", "Requested entity was not found.")
        _, _, project, _, location, _, repository = parts
        if project != PROJECT or repository != "launch":
            return self.google_error(404, "NOT_FOUND", "Requested entity was not found.")
        self.answer(200, json.dumps({
            "name": f"projects/{project}/locations/{location}/repositories/{repository}",
            "format": "DOCKER", "mode": "STANDARD_REPOSITORY",
            "createTime": "2026-01-01T00:00:00.000000Z", "updateTime": "2026-01-01T00:00:00.000000Z"}))

    def do_GET(self):
        if self.path.startswith("/v1/projects/"):
            return self.repository()
        if self.headers.get("metadata-flavor") != "Google":
            return self.answer(403, "Missing Metadata-Flavor:Google header.", "text/html")
        if self.path == "/computeMetadata/v1/instance/service-accounts/default/token":
            return self.answer(200, json.dumps({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}))
        if self.path == "/computeMetadata/v1/project/project-id":
            return self.answer(200, PROJECT, "application/text")
        self.answer(404, "Not Found", "text/html")


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
