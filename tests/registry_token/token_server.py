#!/usr/bin/env python3
"""A token server for docker-registry's `auth.token` mode — a test FAKE of the
bearer-token flow real registries (Docker Hub, ACR, Artifact Registry) use.

    token_server.py --port-file F --key key.pem --cert cert.pem \
        --user U --password P --service S --issuer I

GET /token?service=S&scope=repository:NAME:pull,push with HTTP basic auth
U:P answers {"token": JWT, "access_token": JWT, "expires_in": 300}; the JWT
(RS256, signed with `openssl dgst`, the certificate in its `x5c` header)
grants the requested actions. Wrong or missing credentials: 401. Binds
127.0.0.1 only; stop it by its PID. Standard library plus the openssl CLI.
"""
import argparse, base64, json, subprocess, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main():
    ap = argparse.ArgumentParser()
    for flag in ("--port-file", "--key", "--cert", "--user", "--password", "--service", "--issuer"):
        ap.add_argument(flag, required=True)
    args = ap.parse_args()
    der = subprocess.run(["openssl", "x509", "-in", args.cert, "-outform", "DER"],
                         check=True, capture_output=True).stdout
    x5c = [base64.b64encode(der).decode()]
    expected = "Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()

    def sign(claims):
        header = b64url(json.dumps({"typ": "JWT", "alg": "RS256", "x5c": x5c}).encode())
        payload = b64url(json.dumps(claims).encode())
        signing_input = f"{header}.{payload}".encode()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", args.key],
                             input=signing_input, check=True, capture_output=True).stdout
        return f"{header}.{payload}.{b64url(sig)}"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            url = urlparse(self.path)
            if url.path != "/token":
                self.send_response(404); self.end_headers(); return
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="token"')
                self.end_headers()
                return
            query = parse_qs(url.query)
            access = []
            for scope in query.get("scope", []):
                parts = scope.split(":")
                if len(parts) >= 3 and parts[0] == "repository":
                    access.append({"type": "repository", "name": ":".join(parts[1:-1]),
                                   "actions": parts[-1].split(",")})
            now = int(time.time())
            token = sign({"iss": args.issuer, "sub": args.user, "aud": args.service,
                          "exp": now + 300, "nbf": now - 10, "iat": now,
                          "jti": uuid.uuid4().hex, "access": access})
            body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.replace(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
