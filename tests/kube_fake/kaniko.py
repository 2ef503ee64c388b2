"""A FAKE Kaniko executor for the fake cluster's kubelet (server.py).

This is not Kaniko. It stands for the contract of Kaniko's executor image
(`gcr.io/kaniko-project/executor`, the binary `/kaniko/executor`): no Kaniko can be installed on the
test machines, so when a pod's container image is an executor image, the fake kubelet runs this
instead of a container. It carries out what the executor is asked, with the local Docker engine:

| the executor's contract | what the fake does |
|---|---|
| args `--context`, `--dockerfile`, `--destination` (repeatable), `--cache`, `--cache-repo`, `--snapshot-mode`, `--compressed-caching`, `--custom-platform`, `--build-arg`, `--target`, `--no-push`, ... as `--flag=value` or `--flag value` | parsed as Kaniko's flags; an unknown flag is Kaniko's `Error: unknown flag` and exit 1 |
| `--context=tar:///PATH.tgz` (a PVC mounted in the pod: CoreWeave's way) | PATH is found through the pod's volume mounts (a PVC is a host directory of the fake) and unpacked |
| `--context=s3://BUCKET/KEY` | fetched with SigV4, as Kaniko's AWS SDK does: the endpoint from `S3_ENDPOINT` (with `S3_FORCE_PATH_STYLE`), else `https://s3.<AWS_REGION>.amazonaws.com`; credentials from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`[/`AWS_SESSION_TOKEN`] in the pod's env, else the shared credentials file W&B mounts from `secret-name`/`secret-key` at `/root/.aws/credentials` (`AWS_SHARED_CREDENTIALS_FILE`, profile `AWS_PROFILE`) |
| `--context=dir://PATH` | the directory, through the mounts |
| `--context=gs://BUCKET/KEY` | fetched as Kaniko's GCS client does (the XML API's `GET /BUCKET/KEY`) with Application Default Credentials: the service-account key at `GOOGLE_APPLICATION_CREDENTIALS` (W&B mounts `secret-name`/`secret-key` there) is exchanged for an access token at its `token_uri` (an RS256 JWT signed with `openssl dgst`, `scope` devstorage.read_only), sent as `Authorization: Bearer`; the endpoint is `https://storage.googleapis.com`, or the fake's own `KANIKO_FAKE_GCS_URL` in the pod's env (the tests' GCS stand-in; Kaniko has no such setting) |
| `--context=https://ACCOUNT.blob.core.windows.net/CONTAINER/KEY` | fetched as Kaniko's Azure client does: a Shared Key-signed `GET` of the blob with the account key in `AZURE_STORAGE_ACCESS_KEY` (the Secret `azure-storage-access-key` W&B's Job maps there); the endpoint is the URL's, or the fake's own `KANIKO_FAKE_AZURE_BLOB_ENDPOINTS` in the pod's env (`ACCOUNT=https://HOST/ACCOUNT,...`: Azurite, path-style; Kaniko has no such setting); HTTPS trusts `SSL_CERT_FILE` from the pod's env (as Go does; a path on the test machine, the fake having no image filesystem) |
| other context schemes | an error naming the scheme, exit 1 (one function in `CONTEXT_FETCHERS` each) |
| `/kaniko/.docker/config.json` (a mounted docker config Secret; or `$DOCKER_CONFIG/config.json`) | the push's credentials: `docker push` runs with that config |
| the build | `docker build` of the unpacked context with its `--dockerfile`, tagged with each destination; pushed unless `--no-push`, then the local tags are removed (so a run pulls what was pushed) |
| the cache (`--cache`, `--cache-repo`) | the engine's own build cache; no cache layers are pushed (said in the log) |
| output | Kaniko-style `INFO[...]` lines and the engine's build output: the pod's log |
| failure | the build's last error lines, `error building image: <its last error line>` (Kaniko's wording), exit code 1 |

Which images are executors: `gcr.io/kaniko-project/executor:*` (any tag or digest) and the
comma-separated `fnmatch` patterns of `KUBE_FAKE_KANIKO_IMAGES` (a configured `kaniko-image`).
"""

import base64
import datetime
import fnmatch
import hashlib
import hmac
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

DEFAULT_IMAGES = ["gcr.io/kaniko-project/executor:*", "gcr.io/kaniko-project/executor@*"]

# Kaniko's flags that take a value, and its boolean flags (`--flag` alone means true).
VALUE_FLAGS = {
    "context", "dockerfile", "destination", "cache-repo", "cache-dir", "cache-ttl", "snapshot-mode",
    "custom-platform", "build-arg", "target", "verbosity", "insecure-registry", "skip-tls-verify-registry",
    "tar-path", "digest-file", "image-name-with-digest-file", "image-name-tag-with-digest-file", "label",
    "push-retry", "log-format", "registry-mirror", "registry-certificate", "ignore-path", "kaniko-dir",
    "context-sub-path", "git", "image-fs-extract-retry", "compression", "compression-level",
}
BOOL_FLAGS = {
    "cache", "compressed-caching", "no-push", "insecure", "insecure-pull", "skip-tls-verify",
    "skip-tls-verify-pull", "cleanup", "single-snapshot", "use-new-run", "reproducible", "log-timestamp",
    "force", "cache-copy-layers", "cache-run-layers", "skip-unused-stages", "ignore-var-run",
    "push-ignore-immutable-tag-errors", "skip-push-permission-check",
}
REPEATED = {"destination", "build-arg", "label", "insecure-registry", "skip-tls-verify-registry", "registry-mirror", "ignore-path"}


def is_executor(image):
    """Whether a container with `image` is Kaniko's executor (see the module docs)."""
    patterns = DEFAULT_IMAGES + [p.strip() for p in os.environ.get("KUBE_FAKE_KANIKO_IMAGES", "").split(",") if p.strip()]
    return any(fnmatch.fnmatchcase(image or "", p) for p in patterns)


class KanikoError(Exception):
    """A failure the executor reports (its log's last line) before exiting 1."""


def parse_args(args):
    """Kaniko's flags: {flag: value or [values]}; raises KanikoError for an unknown flag."""
    flags = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise KanikoError(f'Error: unknown command "{arg}" for "executor"')
        name, eq, value = arg[2:].partition("=")
        if name in BOOL_FLAGS:
            value = value if eq else "true"
            if value not in ("true", "false"):
                raise KanikoError(f'Error: invalid argument "{value}" for "--{name}" flag: strconv.ParseBool: parsing "{value}": invalid syntax')
            flags[name] = value == "true"
        elif name in VALUE_FLAGS:
            if not eq:
                i += 1
                if i >= len(args):
                    raise KanikoError(f"Error: flag needs an argument: --{name}")
                value = args[i]
            if name in REPEATED:
                flags.setdefault(name, []).append(value)
            else:
                flags[name] = value
        else:
            raise KanikoError(f"Error: unknown flag: --{name}")
        i += 1
    return flags


def host_path(mounts, path):
    """The host path of `path` inside the pod, through its mounts (`host:container[:ro]`)."""
    best = None
    for mount in mounts:
        parts = mount.split(":")
        source, target = parts[0], parts[1]
        target = target.rstrip("/") or "/"
        if path == target or path.startswith(target + "/"):
            if best is None or len(target) > len(best[1]):
                best = (source, target)
    if best is None:
        return None
    rest = path[len(best[1]):].lstrip("/")
    return os.path.join(best[0], rest) if rest else best[0]


def aws_credentials(env, mounts):
    """(access key, secret key, session token) from the pod's env, else its shared credentials file."""
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN")
    inside = env.get("AWS_SHARED_CREDENTIALS_FILE") or "/root/.aws/credentials"
    path = host_path(mounts, inside)
    if not path or not os.path.isfile(path):
        raise KanikoError(f"error resolving source context: NoCredentialProviders: no valid providers in chain "
                          f"(no AWS_ACCESS_KEY_ID in the environment and no {inside})")
    import configparser
    parser = configparser.ConfigParser()
    parser.read(path)
    profile = env.get("AWS_PROFILE") or "default"
    if profile not in parser:
        raise KanikoError(f"error resolving source context: SharedCredsLoad: failed to get profile {profile} in {inside}")
    section = parser[profile]
    return section.get("aws_access_key_id"), section.get("aws_secret_access_key"), section.get("aws_session_token")


def sigv4_get(url, region, access_key, secret_key, token):
    """A GET of `url` signed with AWS Signature Version 4 for S3 (an empty payload)."""
    parsed = urllib.parse.urlsplit(url)
    stamp = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = stamp.strftime("%Y%m%dT%H%M%SZ"), stamp.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": parsed.netloc, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    if token:
        headers["x-amz-security-token"] = token
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["GET", parsed.path or "/", parsed.query, "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    request = urllib.request.Request(url, headers={k: v for k, v in headers.items() if k != "host"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read()


def fetch_s3(context, env, mounts, work, log):
    bucket, _, key = context[len("s3://"):].partition("/")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = env.get("S3_ENDPOINT")
    if endpoint:
        base = endpoint.rstrip("/")
        url = f"{base}/{bucket}/{urllib.parse.quote(key)}"
    else:
        url = f"https://{bucket}.s3.{region}.amazonaws.com/{urllib.parse.quote(key)}"
    access, secret, token = aws_credentials(env, mounts)
    log(f"INFO[0000] Retrieving S3 context from {context}")
    try:
        data = sigv4_get(url, region, access, secret, token)
    except urllib.error.HTTPError as error:
        body = error.read().decode(errors="replace")
        raise KanikoError(f"error resolving source context: failed to get context {context}: {error.code} {error.reason}: {body[:300]}")
    except OSError as error:
        raise KanikoError(f"error resolving source context: failed to get context {context}: {error}")
    path = os.path.join(work, "context.tar.gz")
    with open(path, "wb") as f:
        f.write(data)
    return path


def fetch_tar(context, env, mounts, work, log):
    inside = context[len("tar://"):]
    path = host_path(mounts, inside)
    if not path or not os.path.isfile(path):
        raise KanikoError(f"error resolving source context: stat {inside}: no such file or directory")
    log(f"INFO[0000] Using tar context {context}")
    return path


def save(work, data):
    """Writes a fetched context into `work`; its path."""
    path = os.path.join(work, "context.tar.gz")
    with open(path, "wb") as f:
        f.write(data)
    return path


def http_get(what, request, ssl_context=None):
    """The body of `request`, a KanikoError naming `what` (the context, or what it fetched) on failure."""
    try:
        with urllib.request.urlopen(request, timeout=120, context=ssl_context) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        body = error.read().decode(errors="replace")
        raise KanikoError(f"error resolving source context: failed to get {what}: {error.code} {error.reason}: {body[:300]}")
    except OSError as error:
        raise KanikoError(f"error resolving source context: failed to get {what}: {error}")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def gcp_access_token(env, mounts, work):
    """An access token for the service-account key at `GOOGLE_APPLICATION_CREDENTIALS` (JWT bearer grant)."""
    inside = env.get("GOOGLE_APPLICATION_CREDENTIALS")
    path = host_path(mounts, inside) if inside else None
    if not path or not os.path.isfile(path):
        raise KanikoError("error resolving source context: google: could not find default credentials "
                          f"(GOOGLE_APPLICATION_CREDENTIALS is {inside or 'unset'}, not a file in the pod)")
    with open(path) as f:
        key = json.load(f)
    if key.get("type") != "service_account":
        raise KanikoError(f"error resolving source context: google: {inside} is not a service-account key")
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": key.get("private_key_id", "")}
    claims = {"iss": key["client_email"], "scope": "https://www.googleapis.com/auth/devstorage.read_only",
              "aud": key["token_uri"], "iat": now, "exp": now + 3600}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    pem = os.path.join(work, "sa.pem")
    with open(os.open(pem, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(key["private_key"])
    signed = subprocess.run(["openssl", "dgst", "-sha256", "-sign", pem], input=signing_input.encode(), capture_output=True)
    os.remove(pem)
    if signed.returncode != 0:
        raise KanikoError("error resolving source context: google: cannot sign with the service-account key")
    form = urllib.parse.urlencode({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                   "assertion": f"{signing_input}.{b64url(signed.stdout)}"}).encode()
    answer = http_get(f"a Google access token from {key['token_uri']}", urllib.request.Request(key["token_uri"], data=form, method="POST"))
    return json.loads(answer)["access_token"]


def fetch_gcs(context, env, mounts, work, log):
    bucket, _, key = context[len("gs://"):].partition("/")
    base = (env.get("KANIKO_FAKE_GCS_URL") or "https://storage.googleapis.com").rstrip("/")
    token = gcp_access_token(env, mounts, work)
    log(f"INFO[0000] Retrieving GCS context from {context}")
    request = urllib.request.Request(f"{base}/{bucket}/{urllib.parse.quote(key)}", headers={"Authorization": f"Bearer {token}"})
    return save(work, http_get(f"context {context}", request))


def fetch_azure(context, env, mounts, work, log):
    parsed = urllib.parse.urlsplit(context)
    if not (parsed.hostname or "").endswith(".blob.core.windows.net"):
        raise KanikoError(f"error resolving source context: {context} is not an Azure blob URL (https://ACCOUNT.blob.core.windows.net/CONTAINER/KEY)")
    account = parsed.hostname.split(".")[0]
    endpoints = dict(e.strip().split("=", 1) for e in env.get("KANIKO_FAKE_AZURE_BLOB_ENDPOINTS", "").split(",") if "=" in e)
    url = endpoints[account].rstrip("/") + parsed.path if account in endpoints else context
    secret = env.get("AZURE_STORAGE_ACCESS_KEY")
    if not secret:
        raise KanikoError("error resolving source context: AZURE_STORAGE_ACCESS_KEY is not set in the pod")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    headers = {"x-ms-date": date, "x-ms-version": "2021-08-06"}
    path = urllib.parse.urlsplit(url).path
    # Shared Key: VERB, eleven standard headers (all empty for this GET), the x-ms- headers, the resource.
    to_sign = "GET\n" + "\n" * 11 + "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)) + f"/{account}{path}"
    try:
        signature = base64.b64encode(hmac.new(base64.b64decode(secret), to_sign.encode(), hashlib.sha256).digest()).decode()
    except ValueError:
        raise KanikoError("error resolving source context: AZURE_STORAGE_ACCESS_KEY is not a base64 account key")
    headers["Authorization"] = f"SharedKey {account}:{signature}"
    ssl_context = None
    if env.get("SSL_CERT_FILE"):
        import ssl
        ssl_context = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    log(f"INFO[0000] Retrieving Azure blob context from {context}")
    return save(work, http_get(f"context {context}", urllib.request.Request(url, headers=headers), ssl_context))


# The context fetchers by URL scheme: each returns the host path of a tar.gz (or raises KanikoError).
CONTEXT_FETCHERS = {"s3://": fetch_s3, "tar://": fetch_tar, "gs://": fetch_gcs, "https://": fetch_azure}


def unpack(context, env, mounts, work, log):
    """The build context's host directory."""
    if context.startswith("dir://"):
        path = host_path(mounts, context[len("dir://"):])
        if not path or not os.path.isdir(path):
            raise KanikoError(f"error resolving source context: {context} is not a directory in the pod")
        return path
    for scheme, fetch in CONTEXT_FETCHERS.items():
        if context.startswith(scheme):
            archive = fetch(context, env, mounts, work, log)
            break
    else:
        scheme = context.split("://", 1)[0] if "://" in context else context
        raise KanikoError(f"error resolving source context: the fake Kaniko executor does not serve `{scheme}` contexts yet")
    directory = os.path.join(work, "context")
    os.makedirs(directory)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(directory, filter="tar")
    except (tarfile.TarError, OSError) as error:
        raise KanikoError(f"error resolving source context: unpacking {context}: {error}")
    log(f"INFO[0000] Unpacked the build context to /kaniko/buildcontext ({sum(len(f) for _, _, f in os.walk(directory))} files)")
    return directory


class Executor:
    """One run of the executor for a pod: `run()` writes its log to `log_path` and returns the exit code."""

    def __init__(self, container, env, mounts, log_path):
        self.args = list(container.get("command") or [])[1:] + list(container.get("args") or [])
        self.env, self.mounts, self.log_path = env, mounts, log_path
        self.process = None
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.log_file = open(log_path, "a", buffering=1)
        self.started = time.time()

    def log(self, line):
        self.log_file.write(line.rstrip("\n") + "\n")

    def stop(self):
        """Stops the build (the pod was deleted)."""
        self.stopped.set()
        with self.lock:
            if self.process and self.process.poll() is None:
                self.process.kill()

    def command(self, args, env=None):
        """Runs `docker args`, its output into the log; (exit code, its last lines)."""
        with self.lock:
            if self.stopped.is_set():
                return 137, []
            self.process = subprocess.Popen(["docker", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            text=True, errors="replace", env=env)
        last = []
        for line in self.process.stdout:
            line = ANSI.sub("", line).rstrip()
            self.log(line)
            last = (last + [line])[-40:]
        return self.process.wait(), last

    def run(self):
        try:
            return self._run()
        except KanikoError as error:
            self.log(str(error))
            return 1
        except Exception as error:  # a bug of the fake: say so in the log, exit as Kaniko would
            self.log(f"error building image: the fake Kaniko executor failed: {error!r}")
            return 1
        finally:
            self.log_file.close()

    def _run(self):
        flags = parse_args(self.args)
        context = flags.get("context") or "dir:///workspace/"
        dockerfile = flags.get("dockerfile") or "Dockerfile"
        destinations = flags.get("destination", [])
        no_push = flags.get("no-push", False)
        if not destinations and not no_push:
            raise KanikoError("Error: you must provide --destination, or use --no-push")
        self.log(f"INFO[0000] (the fake Kaniko executor of the test cluster) args: {shlex.join(self.args)}")
        if flags.get("cache"):
            self.log(f"INFO[0000] cache: the local engine's build cache is used; no layers are pushed to {flags.get('cache-repo') or '<destination>/cache'}")
        with tempfile.TemporaryDirectory(prefix="kaniko-fake-") as work:
            directory = unpack(context, self.env, self.mounts, work, self.log)
            path = os.path.normpath(os.path.join(directory, dockerfile))
            if not path.startswith(os.path.normpath(directory) + os.sep) or not os.path.isfile(path):
                raise KanikoError(f"error resolving dockerfile path: please provide a valid path to a Dockerfile within the build context with --dockerfile ({dockerfile})")
            tag_args = [a for d in destinations for a in ("-t", d)]
            local = None
            if not tag_args:
                local = f"kaniko-fake-no-push:{os.getpid()}-{int(self.started)}"
                tag_args = ["-t", local]
            build = ["build", "--force-rm", "-f", path, *tag_args]
            for arg in flags.get("build-arg", []):
                build += ["--build-arg", arg]
            if flags.get("target"):
                build += ["--target", flags["target"]]
            if flags.get("custom-platform"):
                build += ["--platform", flags["custom-platform"]]
            build.append(directory)
            self.log(f"INFO[0001] Building {dockerfile} with the local engine")
            code, last = self.command(build)
            if code != 0:
                errors = [l for l in last if any(w in l.lower() for w in ("error", "not found", "non-zero code"))] or last[-3:]
                for line in errors[-3:]:
                    self.log(f"ERROR {line}")
                reason = (errors or ["the build failed"])[-1]
                raise KanikoError(f"error building image: {reason}")
            try:
                if no_push:
                    self.log("INFO[0002] Skipping push to container registry due to --no-push flag")
                    return 0
                config_dir = self.docker_config(work)
                env = dict(os.environ, DOCKER_CONFIG=config_dir)
                for destination in destinations:
                    self.log(f"INFO[0002] Pushing image to {destination}")
                    code, last = self.command(["push", destination], env=env)
                    if code != 0:
                        raise KanikoError(f"error pushing image: failed to push to destination {destination}: {(last or ['push failed'])[-1]}")
                    self.log(f"INFO[0003] Pushed {destination}")
                return 0
            finally:
                for tag in destinations or [local]:
                    subprocess.run(["docker", "rmi", "--no-prune", tag], capture_output=True)

    def docker_config(self, work):
        """A docker config directory with the pod's `/kaniko/.docker/config.json` (or `$DOCKER_CONFIG`)."""
        inside = os.path.join(self.env.get("DOCKER_CONFIG") or "/kaniko/.docker", "config.json")
        found = host_path(self.mounts, inside)
        directory = os.path.join(work, "docker-config")
        os.makedirs(directory)
        target = os.path.join(directory, "config.json")
        if found and os.path.isfile(found):
            shutil.copyfile(found, target)
            with open(target) as f:
                registries = sorted((json.load(f).get("auths") or {}).keys())
            self.log(f"INFO[0002] Using the docker config at {inside} (registries: {', '.join(registries) or 'none'})")
        else:
            with open(target, "w") as f:
                f.write('{"auths": {}}')
            self.log(f"INFO[0002] No docker config at {inside}: pushing without credentials")
        return directory


def serve_log(handler, path, query, finished):
    """`pods/log` of an executor pod: the log file, with `tailLines` and `follow` (until `finished()`)."""
    handler.start_stream("text/plain")
    try:
        with open(path, "rb") as f:
            data = f.read()
            if query.get("tailLines"):
                keep = int(query["tailLines"])
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-keep:]) if keep > 0 else b""
            if data:
                handler.chunk(data)
            if query.get("follow") in ("true", "1"):
                while True:
                    more = f.read()
                    if more:
                        handler.chunk(more)
                    elif finished():
                        more = f.read()
                        if more:
                            handler.chunk(more)
                        break
                    else:
                        time.sleep(0.1)
        handler.end_stream()
    except (BrokenPipeError, ConnectionResetError):
        pass
