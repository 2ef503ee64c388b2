"""A fake of Azure AD's (Microsoft Entra ID's) v2.0 token endpoint
(`POST https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`, the
`client_credentials` grant with a client secret or a federated client
assertion) and of the instance metadata service's managed-identity token
(`GET http://169.254.169.254/metadata/identity/oauth2/token`), for the tests
of environment-azure. Not Microsoft's: it speaks their wire format, as the
Azure SDKs' recorded test fixtures show it, closely enough.

Token endpoint: the path's tenant must be TENANT (else 400 `invalid_request`,
AADSTS90002), the form's `client_id` CLIENT_ID (else 400 `unauthorized_client`,
AADSTS700016), `grant_type=client_credentials` and a `scope` ending in
`/.default`. Then either
- `client_secret` equal to SECRET, else 401 `{"error": "invalid_client",
  "error_description": "AADSTS7000215: Invalid client secret provided. ...",
  "error_codes": [7000215], ...}` as AAD answers it; or
- `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
  and a `client_assertion` that is FEDERATED_TOKEN (the token the test wrote
  into the federated token file: standing for AAD's check of the issuer's
  signature and of the federated credential's issuer and subject) with
  `aud` `api://AzureADTokenExchange`, else 400 `invalid_client`, AADSTS700211 /
  AADSTS70021 as AAD answers them.
A good request gets `{"token_type": "Bearer", "expires_in": 3599,
"ext_expires_in": 3599, "access_token": TOKEN}`.

IMDS: with `Metadata: true` only (else 400 `bad_request_102`, as IMDS), and
`api-version` and `resource`; answers the token with `expires_in` and
`expires_on` as strings, as IMDS does.

Every token issued is a fresh JWT-shaped string (see `issue`) and
is written to COUNT_FILE as one line `SOURCE SCOPE TOKEN` (SOURCE is
`secret`, `federated` or `imds`), so a test counts the grants and checks
that no token leaked.

ACR (with `--acr-service`, `--acr-key`, `--acr-cert`): a fake of Azure
Container Registry's token server (`https://REG.azurecr.io/oauth2/...`), the
realm of a docker-registry in token-auth mode that stands for REG's `/v2/`:
- `POST /oauth2/exchange`, form `grant_type=access_token`, `service`, `tenant`,
  `access_token`: the AAD token must be one this fake issued for Azure
  Resource Manager (`https://management.azure.com/.default`, or IMDS's resource
  `https://management.azure.com`) or ACR's audience
  (`https://containerregistry.azure.net/.default`), `service` the registry and
  `tenant` TENANT; answers `{"refresh_token": ...}` (logged as
  `acr-refresh SERVICE TOKEN`), else 401 `{"errors": [{"code": "UNAUTHORIZED", ...}]}`;
  (each access token below is logged too, as `acr-access SERVICE TOKEN`)
- `POST /oauth2/token`, form `grant_type=refresh_token`, `service`,
  `scope=repository:REPO:pull,push`, `refresh_token`: answers
  `{"access_token": JWT}`;
- `GET /oauth2/token?service=...&scope=...` with basic auth
  `00000000-0000-0000-0000-000000000000` : refresh token (what `docker login`
  with that user sends): the same.
The JWT is what docker-registry's `auth.token` checks: RS256, signed with
`openssl dgst` by `--acr-key`, the certificate in its `x5c` header, issuer
`Azure Container Registry`, audience the service, the requested access.

With `--acr-upstream HOST:PORT` (the docker-registry), every `/v2/...`
request (any method) is passed on to it and its answer passed back, so that
one origin serves both the registry and its token server, as
`https://REG.azurecr.io` does: a token the exchange gives is bound by the
agent to the origin it came from, and must be usable for the registry
there. The `Host` header is passed as it came, so the registry's upload
`Location`s and its token realm name this origin.

Usage: server.py --tenant T --client-id C --secret S --federated-token F
--count-file FILE [--acr-service REG.azurecr.io --acr-key KEY --acr-cert CERT
[--acr-upstream 127.0.0.1:PORT]]; prints the port. Binds 127.0.0.1 only.
Standard library plus the openssl CLI.
"""

import argparse
import base64
import http.client
import json
import secrets
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = argparse.ArgumentParser()
for flag in ("--tenant", "--client-id", "--secret", "--federated-token", "--count-file"):
    ARGS.add_argument(flag, required=True)
for flag in ("--acr-service", "--acr-key", "--acr-cert", "--acr-upstream"):
    ARGS.add_argument(flag)
ARGS = ARGS.parse_args()
TENANT, CLIENT_ID, SECRET = ARGS.tenant, ARGS.client_id, ARGS.secret
FEDERATED_TOKEN, COUNT_FILE = ARGS.federated_token, ARGS.count_file
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ACR_USER = "00000000-0000-0000-0000-000000000000"
# The audiences ACR's exchange takes an AAD token for (v2 scope, IMDS resource).
ACR_AUDIENCES = {
    "https://management.azure.com/.default", "https://management.azure.com",
    "https://management.core.windows.net/.default", "https://management.core.windows.net/",
    "https://containerregistry.azure.net/.default", "https://containerregistry.azure.net",
}
LOCK = threading.Lock()
ISSUED = {}  # AAD token -> scope
REFRESH_TOKENS = set()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def registry_jwt(scopes):
    """The registry token docker-registry checks (as tests/registry_token)."""
    der = subprocess.run(["openssl", "x509", "-in", ARGS.acr_cert, "-outform", "DER"],
                         check=True, capture_output=True).stdout
    access = []
    for scope in scopes:
        parts = scope.split(":")
        if len(parts) >= 3 and parts[0] == "repository":
            access.append({"type": "repository", "name": ":".join(parts[1:-1]),
                           "actions": parts[-1].split(",")})
    now = int(time.time())
    header = b64url(json.dumps({"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}).encode())
    claims = b64url(json.dumps({
        "iss": "Azure Container Registry", "sub": ACR_USER, "aud": ARGS.acr_service,
        "exp": now + 3600, "nbf": now - 10, "iat": now, "jti": secrets.token_hex(16),
        "access": access}).encode())
    signing_input = f"{header}.{claims}".encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", ARGS.acr_key],
                         input=signing_input, check=True, capture_output=True).stdout
    return f"{header}.{claims}.{b64url(sig)}"


def acr_unauthorized(message="authentication required, visit https://aka.ms/acr/authorization for more information."):
    return json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": message}]})


def aad_error(error, code, description):
    """AAD's error body: `error`, `error_description` with trace lines, codes."""
    now = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    return json.dumps({
        "error": error,
        "error_description": f"AADSTS{code}: {description}\r\nTrace ID: 00000000-0000-0000-0000-000000000001\r\n"
                             f"Correlation ID: 00000000-0000-0000-0000-000000000002\r\nTimestamp: {now}",
        "error_codes": [code],
        "timestamp": now,
        "trace_id": "00000000-0000-0000-0000-000000000001",
        "correlation_id": "00000000-0000-0000-0000-000000000002",
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    })


def issue(source, scope):
    """A token shaped as AAD's (a JWT with `aud` the resource, `iss` the
    tenant's STS, `tid`, `appid`, `exp`), its signature random bytes: a
    client must not look into it, and Azurite's `--oauth basic` checks only
    these claims."""
    now = int(time.time())
    resource = scope[: -len("/.default")] if scope.endswith("/.default") else scope
    claims = {
        "aud": resource.rstrip("/"), "iss": f"https://sts.windows.net/{TENANT}/", "iat": now,
        "nbf": now, "exp": now + 3599, "tid": TENANT, "appid": CLIENT_ID, "oid": CLIENT_ID,
        "sub": CLIENT_ID, "ver": "1.0", "uti": secrets.token_urlsafe(16)}
    token = ".".join([
        b64url(json.dumps({"typ": "JWT", "alg": "RS256", "kid": "fake-aad"}).encode()),
        b64url(json.dumps(claims).encode()),
        b64url(secrets.token_bytes(64))])
    with LOCK, open(COUNT_FILE, "a") as f:
        f.write(f"{source} {scope} {token}\n")
        ISSUED[token] = scope
    return token


def claims_of(jwt):
    try:
        part = jwt.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except Exception:
        return None


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, kind="application/json; charset=utf-8"):
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

    def proxied(self):
        """Passes a `/v2/...` request on to the registry (`--acr-upstream`)
        and its answer back; True when it did."""
        if not ARGS.acr_upstream or not (self.path == "/v2" or self.path.startswith("/v2/")):
            return False
        has_body = "content-length" in self.headers or "chunked" in self.headers.get("transfer-encoding", "").lower()
        data = self.body() if has_body else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("transfer-encoding", "connection", "content-length", "keep-alive")}
        upstream = http.client.HTTPConnection(ARGS.acr_upstream, timeout=300)
        try:
            upstream.request(self.command, self.path, body=data, headers=headers)
            answer = upstream.getresponse()
            payload = answer.read()
            self.send_response(answer.status)
            for k, v in answer.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length", "keep-alive"):
                    self.send_header(k, v)
            if self.command == "HEAD":
                self.send_header("content-length", answer.getheader("content-length", "0"))
            else:
                self.send_header("content-length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        finally:
            upstream.close()
        return True

    def do_HEAD(self):
        if not self.proxied():
            self.answer(404, "")

    def do_PUT(self):
        if not self.proxied():
            self.answer(404, "{}")

    def do_PATCH(self):
        if not self.proxied():
            self.answer(404, "{}")

    def do_DELETE(self):
        if not self.proxied():
            self.answer(404, "{}")

    def do_POST(self):
        if self.proxied():
            return
        parts = self.path.split("?")[0].strip("/").split("/")
        form = urllib.parse.parse_qs(self.body().decode())
        if ARGS.acr_service and parts == ["oauth2", "exchange"]:
            return self.acr_exchange(form)
        if ARGS.acr_service and parts == ["oauth2", "token"]:
            return self.acr_token_from_form(form)
        if len(parts) != 4 or parts[1:] != ["oauth2", "v2.0", "token"]:
            return self.answer(404, "{}")
        field = lambda name: (form.get(name) or [""])[0]
        if parts[0] != TENANT:
            return self.answer(400, aad_error(
                "invalid_request", 90002, f"Tenant '{parts[0]}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."))
        if field("grant_type") != "client_credentials":
            return self.answer(400, aad_error(
                "unsupported_grant_type", 70003, "The app requested an unsupported grant type."))
        if field("client_id") != CLIENT_ID:
            return self.answer(400, aad_error(
                "unauthorized_client", 700016,
                f"Application with identifier '{field('client_id')}' was not found in the directory '{TENANT}'."))
        scope = field("scope")
        if not scope.endswith("/.default"):
            return self.answer(400, aad_error(
                "invalid_scope", 1002012, f"The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."))
        if "client_secret" in form:
            if field("client_secret") != SECRET:
                return self.answer(401, aad_error(
                    "invalid_client", 7000215,
                    f"Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{CLIENT_ID}'."))
            return self.grant("secret", scope)
        if "client_assertion" in form:
            if field("client_assertion_type") != JWT_BEARER:
                return self.answer(400, aad_error(
                    "invalid_request", 700211, "The client_assertion_type is not supported."))
            assertion = field("client_assertion")
            claims = claims_of(assertion)
            if claims is None:
                return self.answer(400, aad_error(
                    "invalid_client", 50027, "JWT token is invalid or malformed."))
            audience = claims.get("aud")
            audiences = audience if isinstance(audience, list) else [audience]
            if "api://AzureADTokenExchange" not in audiences or assertion != FEDERATED_TOKEN:
                return self.answer(400, aad_error(
                    "invalid_client", 70021, "No matching federated identity record found for presented assertion."))
            return self.grant("federated", scope)
        return self.answer(401, aad_error(
            "invalid_client", 7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."))

    def grant(self, source, scope):
        token = issue(source, scope)
        self.answer(200, json.dumps({
            "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}))

    def acr_exchange(self, form):
        field = lambda name: (form.get(name) or [""])[0]
        if field("grant_type") != "access_token":
            return self.answer(400, json.dumps({"errors": [{"code": "UNSUPPORTED", "message": "grant_type must be access_token"}]}))
        if field("service") != ARGS.acr_service:
            return self.answer(401, acr_unauthorized(f"the service {field('service')} is not this registry"))
        if field("tenant") not in ("", TENANT):
            return self.answer(401, acr_unauthorized("the tenant is not the registry's"))
        scope = ISSUED.get(field("access_token"))
        if scope not in ACR_AUDIENCES:
            return self.answer(401, acr_unauthorized())
        refresh = "eyJhbGciOiJSUzI1NiJ9.fake-acr-refresh-" + secrets.token_urlsafe(24)
        with LOCK, open(COUNT_FILE, "a") as f:
            f.write(f"acr-refresh {ARGS.acr_service} {refresh}\n")
            REFRESH_TOKENS.add(refresh)
        self.answer(200, json.dumps({"refresh_token": refresh}))

    def acr_access_token(self, service, refresh, scopes):
        if service != ARGS.acr_service or refresh not in REFRESH_TOKENS:
            self.send_response(401)
            data = acr_unauthorized().encode()
            self.send_header("www-authenticate", f'Bearer realm="http://127.0.0.1:{self.server.server_address[1]}/oauth2/token",service="{ARGS.acr_service}"')
            self.send_header("content-type", "application/json; charset=utf-8")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        access = registry_jwt(scopes)
        with LOCK, open(COUNT_FILE, "a") as f:
            f.write(f"acr-access {ARGS.acr_service} {access}\n")
        self.answer(200, json.dumps({"access_token": access}))

    def acr_token_from_form(self, form):
        field = lambda name: (form.get(name) or [""])[0]
        if field("grant_type") != "refresh_token":
            return self.answer(400, json.dumps({"errors": [{"code": "UNSUPPORTED", "message": "grant_type must be refresh_token"}]}))
        self.acr_access_token(field("service"), field("refresh_token"), form.get("scope", []))

    def do_GET(self):
        if self.proxied():
            return
        url = urllib.parse.urlparse(self.path)
        if ARGS.acr_service and url.path == "/oauth2/token":
            query = urllib.parse.parse_qs(url.query)
            refresh = ""
            auth = self.headers.get("authorization", "")
            if auth.lower().startswith("basic "):
                try:
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                except Exception:
                    user, password = "", ""
                if user == ACR_USER:
                    refresh = password
            return self.acr_access_token((query.get("service") or [""])[0], refresh, query.get("scope", []))
        if url.path != "/metadata/identity/oauth2/token":
            return self.answer(404, "{}")
        if self.headers.get("metadata") != "true":
            return self.answer(400, json.dumps({
                "error": "bad_request_102", "error_description": "Required metadata header not specified"}))
        query = urllib.parse.parse_qs(url.query)
        resource = (query.get("resource") or [""])[0]
        if not query.get("api-version") or not resource:
            return self.answer(400, json.dumps({
                "error": "invalid_request", "error_description": "Required query variable 'resource' is missing"}))
        token = issue("imds", resource)
        now = int(time.time())
        self.answer(200, json.dumps({
            "access_token": token, "client_id": CLIENT_ID, "expires_in": "86399",
            "expires_on": str(now + 86399), "ext_expires_in": "86399", "not_before": str(now),
            "resource": resource, "token_type": "Bearer"}))


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
