#!/usr/bin/env python3
"""Smoke test of the FAKE W&B server against the REAL wandb client.

1. ensures the venv (setup.sh), starts server.py on 127.0.0.1 (free port),
2. submits a job with the real `wandb launch --queue ... --docker-image ...`
   (submit_with_wandb.sh), twice: the first creates the `default` queue through the
   client's legacy path, the second uses pushToRunQueueByName,
3. plays a minimal launch agent over raw HTTP GraphQL with the exact operation texts of
   the Python agent (OPERATIONS_JSON, the file our W&B client sends from): Viewer -> ProjectRunQueues -> createLaunchAgent ->
   LaunchAgent -> popFromRunQueue -> ackRunQueueItem -> updateLaunchAgent(KILLED),
4. checks the event log order, the popped runSpec, 401s, ack-timeout re-queueing,
   failRunQueueItem / warnings, stopPolling, redaction, dropped connections,
5. job artifacts (on a second fake): creates a CODE job with the real
   `wandb job create ... code DIR` (create_job_with_wandb.sh), fetches it over raw
   HTTP/GraphQL with the recorded texts of operations.json `job_artifact_fetch`
   (ArtifactMembershipByName -> FetchArtifactManifest -> GET manifest ->
   GetArtifactMembershipFileUrls -> GET files -> ArtifactByID for the code artifact -> ...),
   checks wandb-job.json and that the code files come back byte-identical; then lets the
   real Python agent's fetch path (fetch_job_with_wandb.py) do the same; a second
   `wandb job create` with changed code makes v1 and moves `latest`.

Standard library only; run with any python3 >= 3.9:  python3 tests/wandb_fake/smoke_test.py
Last line printed: `N passed, N failed`. Exit status 0 only when nothing failed.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
# The recorded operation texts live with the W&B client that sends them.
OPERATIONS_JSON = os.path.join(HERE, "..", "..", "host", "src", "wandb", "operations.json")
API_KEY = "k" * 20 + "0123456789abcdef0123"  # 40 chars, like a real key
WRONG_KEY = "w" * 40
ENTITY = "smoke-entity"
PROJECT = "smoke-project"
IMAGE = "busybox:latest"

PASSED = 0
FAILED = 0


def check(name: str, cond: bool, detail: object = "") -> bool:
    global PASSED, FAILED
    if cond:
        PASSED += 1
        print(f"ok   {name}")
    else:
        FAILED += 1
        print(f"FAIL {name} {detail}")
    return cond


class Fake:
    def __init__(self, *extra: str):
        self.dir = tempfile.mkdtemp(prefix="wandb-fake-")
        port_file = os.path.join(self.dir, "port")
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "server.py"), "--port-file", port_file,
             "--api-key", API_KEY, "--entity", ENTITY, *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        while not os.path.exists(port_file):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("fake server did not start; log: " + self.log.name)
            time.sleep(0.05)
        self.port = int(open(port_file).read())
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        if FAILED == 0:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"     server log kept in {self.log.name}")

    def http(self, method: str, path: str, body: object = None, key: str | None = API_KEY,
             timeout: float = 10) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if key is not None:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"api:{key}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw

    def gql(self, op: str, variables: dict, key: str | None = API_KEY) -> tuple[int, dict]:
        return self.http("POST", "/graphql", {"query": OPS[op]["query"], "variables": variables}, key)

    def events(self) -> list[dict]:
        return self.http("GET", "/_fake/events", key=None)[1]  # type: ignore[return-value]


def venv_path() -> str:
    out = subprocess.run(["bash", os.path.join(HERE, "setup.sh")], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return out.strip().splitlines()[-1]


def submit(fake: Fake, venv: str, key: str = API_KEY) -> subprocess.CompletedProcess:
    env = dict(os.environ, LAUNCH_AGENT_WANDB_VENV=venv)
    return subprocess.run(
        ["bash", os.path.join(HERE, "submit_with_wandb.sh"), "--port", str(fake.port), "--api-key", key,
         "--queue", "default", "--entity", ENTITY, "--project", PROJECT, "--image", IMAGE],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)


def main() -> int:
    global OPS
    with open(OPERATIONS_JSON) as f:
        ops_doc = json.load(f)
    OPS = ops_doc["operations"]
    venv = venv_path()
    installed = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                                "import wandb; print(wandb.__version__)"],
                               stdout=subprocess.PIPE, text=True).stdout.strip()
    check("operations.json matches the installed wandb version",
          installed == ops_doc["wandb_version"], (installed, ops_doc["wandb_version"]))

    fake = Fake("--ack-timeout", "2")
    try:
        run_checks(fake, venv)
        st, writes = fake.http("GET", "/_fake/writes", key=None)
        # The last response (to this request) is counted once it has gone out.
        check("every response of the fake left in one socket write (headers and body together)",
              st == 200 and writes and all(n == 1 for n in writes),
              (st, writes and sorted(set(writes))))
    finally:
        fake.stop()
    jobs = Fake()
    try:
        run_job_artifact_checks(jobs, venv, ops_doc)
    finally:
        jobs.stop()
    rejecting = Fake("--reject-all")
    try:
        st, _ = rejecting.gql("Viewer", {})
        check("--reject-all: Viewer with the right key is 401", st == 401, st)
    finally:
        rejecting.stop()
    return 0


def run_checks(fake: Fake, venv: str) -> None:
    # ---- auth --------------------------------------------------------------------------
    st, body = fake.gql("Viewer", {}, key=WRONG_KEY)
    check("Viewer with a wrong API key is 401", st == 401, (st, body))
    st, body = fake.gql("Viewer", {}, key=None)
    check("Viewer without credentials is 401", st == 401, (st, body))
    st, body = fake.gql("Viewer", {})
    check("Viewer with the right key is 200 and names the entity",
          st == 200 and body["data"]["viewer"]["entity"] == ENTITY, (st, body))

    # ---- the real client ----------------------------------------------------------------
    r = submit(fake, venv, key=WRONG_KEY)
    check("real `wandb launch` with a wrong key fails", r.returncode != 0, r.stdout[-2000:])
    r = submit(fake, venv)
    check("real `wandb launch --queue default --docker-image` (queue missing) exits 0",
          r.returncode == 0, r.stdout[-3000:])
    r = submit(fake, venv)
    check("real `wandb launch --queue default --docker-image` (queue present) exits 0",
          r.returncode == 0, r.stdout[-3000:])
    fake.http("POST", "/_fake/drop-connections?count=2", key=None)
    r = submit(fake, venv)
    dropped_n = sum(1 for e in fake.events() if e.get("kind") == "dropped")
    check("real client retries through /_fake/drop-connections and still submits",
          r.returncode == 0 and dropped_n >= 1, (dropped_n, r.stdout[-2000:]))
    client_ops = [e["operation"] for e in fake.events()
                  if e.get("kind") in ("query", "mutation") and "W&B" in (e.get("userAgent") or "")]
    print("     operations sent by the real client:", " ".join(str(o) for o in client_ops))
    check("real client used Viewer, pushToRunQueueByName, ProjectRunQueues, CreateRunQueue, pushToRunQueue",
          all(o in client_ops for o in ("Viewer", "pushToRunQueueByName", "ProjectRunQueues",
                                         "CreateRunQueue", "pushToRunQueue")), client_ops)
    unknown = [e for e in fake.events() if any("not implemented" in m or "unknown endpoint" in m
                                               for m in e.get("errors", []))]
    check("the real client sent no operation the fake does not know", not unknown, unknown)

    # ---- a minimal agent over raw GraphQL ----------------------------------------------
    start = len(fake.events())
    st, body = fake.gql("ProjectRunQueues", {"entity": ENTITY, "projectName": "model-registry"})
    queues = (body.get("data") or {}).get("project", {}).get("runQueues") or []
    check("ProjectRunQueues lists the default queue",
          st == 200 and [q["name"] for q in queues] == ["default"] and queues[0]["access"] == "PROJECT",
          body)
    qid = queues[0]["id"] if queues else "?"
    st, body = fake.gql("createLaunchAgent", {
        "entity": ENTITY, "project": "model-registry", "queues": [qid], "hostname": "smoke-host",
        "agentConfig": json.dumps({"entity": ENTITY, "queues": ["default"], "max_jobs": 1}),
        "version": "launch-agent-rs-smoke"})
    agent_id = ((body.get("data") or {}).get("createLaunchAgent") or {}).get("launchAgentId")
    check("createLaunchAgent returns a launchAgentId", st == 200 and bool(agent_id), body)
    st, body = fake.gql("EntityIsTeam", {"entity": ENTITY})
    check("EntityIsTeam answers isTeam", st == 200 and body["data"]["entity"]["isTeam"] is False, body)
    st, body = fake.gql("LaunchAgent", {"agentId": agent_id})
    la = (body.get("data") or {}).get("launchAgent") or {}
    check("LaunchAgent has all fields the Python agent reads",
          set(la) == {"id", "name", "runQueues", "hostname", "agentStatus", "stopPolling", "heartbeatAt"}
          and la["stopPolling"] is False and la["runQueues"] == [qid] and la["hostname"] == "smoke-host",
          body)
    st, body = fake.gql("updateLaunchAgent", {"agentId": agent_id, "agentStatus": "POLLING"})
    check("updateLaunchAgent(POLLING) succeeds", body.get("data", {}).get("updateLaunchAgent") == {"success": True}, body)
    pop_vars = {"entity": ENTITY, "project": "model-registry", "queueName": "default", "launchAgentId": agent_id}
    st, body = fake.gql("popFromRunQueue", pop_vars)
    item = (body.get("data") or {}).get("popFromRunQueue") or {}
    spec_raw = item.get("runSpec")
    check("popFromRunQueue returns runSpec as a JSON string", isinstance(spec_raw, str), body)
    spec = json.loads(spec_raw) if isinstance(spec_raw, str) else {}
    check("popped runSpec carries the submitted image, entity and project",
          (spec.get("docker") or {}).get("docker_image") == IMAGE and spec.get("entity") == ENTITY
          and spec.get("project") == PROJECT, spec)
    item_id = item.get("runQueueItemId")
    st, body = fake.gql("ackRunQueueItem", {"itemId": item_id, "runId": "smoke-run-1"})
    check("ackRunQueueItem succeeds", body.get("data", {}).get("ackRunQueueItem") == {"success": True}, body)
    st, body = fake.gql("ackRunQueueItem", {"itemId": item_id, "runId": "smoke-run-1"})
    check("a second ack of the same item reports success=false",
          body.get("data", {}).get("ackRunQueueItem") == {"success": False}, body)
    st, body = fake.gql("RunStoppedStatus", {"projectName": PROJECT, "entityName": ENTITY, "runId": "smoke-run-1"})
    check("RunStoppedStatus: unknown run -> run null", body.get("data", {}).get("project", {}).get("run") is None, body)
    fake.http("POST", f"/_fake/runs/{ENTITY}/{PROJECT}/smoke-run-1", {"state": "running", "stopped": True}, key=None)
    st, body = fake.gql("RunStoppedStatus", {"projectName": PROJECT, "entityName": ENTITY, "runId": "smoke-run-1"})
    check("RunStoppedStatus after /_fake/runs stop -> stopped true",
          body.get("data", {}).get("project", {}).get("run") == {"stopped": True}, body)
    st, body = fake.gql("RunState", {"project": PROJECT, "entity": ENTITY, "name": "smoke-run-1"})
    check("RunState answers state", body.get("data", {}).get("project", {}).get("run") == {"state": "running"}, body)
    st, body = fake.gql("updateLaunchAgent", {"agentId": agent_id, "agentStatus": "KILLED"})
    check("updateLaunchAgent(KILLED) succeeds", body.get("data", {}).get("updateLaunchAgent") == {"success": True}, body)

    evs = [e for e in fake.events()[start:] if e.get("kind") in ("query", "mutation")]
    names = [e["operation"] for e in evs]
    want = ["ProjectRunQueues", "createLaunchAgent", "LaunchAgent", "popFromRunQueue", "ackRunQueueItem",
            "updateLaunchAgent"]
    it = iter(names)
    in_order = all(any(n == w for n in it) for w in want)
    check("event log shows ProjectRunQueues -> createLaunchAgent -> LaunchAgent -> popFromRunQueue -> "
          "ackRunQueueItem -> updateLaunchAgent in order", in_order, names)
    check("the last agent event is updateLaunchAgent(KILLED)",
          bool(evs) and evs[-1]["operation"] == "updateLaunchAgent"
          and evs[-1]["variables"].get("agentStatus") == "KILLED", evs[-1:] and evs[-1])
    st, body = fake.gql("LaunchAgent", {"agentId": agent_id})
    check("LaunchAgent.agentStatus is KILLED", body["data"]["launchAgent"]["agentStatus"] == "KILLED", body)

    # ---- the second submitted item, then an empty queue ---------------------------------
    st, body = fake.gql("popFromRunQueue", pop_vars)
    item2 = (body.get("data") or {}).get("popFromRunQueue") or {}
    check("the second submitted item pops next (FIFO)",
          item2.get("runQueueItemId") not in (None, item_id)
          and json.loads(item2.get("runSpec") or "{}").get("docker", {}).get("docker_image") == IMAGE, body)
    fake.gql("ackRunQueueItem", {"itemId": item2.get("runQueueItemId"), "runId": "smoke-run-2"})
    st, body = fake.gql("popFromRunQueue", pop_vars)
    item3 = (body.get("data") or {}).get("popFromRunQueue") or {}
    check("the third (retried) submission pops next", bool(item3.get("runQueueItemId")), body)
    fake.gql("ackRunQueueItem", {"itemId": item3.get("runQueueItemId"), "runId": "smoke-run-3"})

    # ---- empty queue, ack timeout, fail, warning, redaction -----------------------------
    st, body = fake.gql("popFromRunQueue", pop_vars)
    check("popFromRunQueue on an empty queue returns null",
          st == 200 and body.get("data") == {"popFromRunQueue": None} and "errors" not in body, body)
    secret_spec = {"entity": ENTITY, "project": PROJECT, "docker": {"docker_image": "alpine:3"},
                   "_wandb_api_key": "SECRET-" + API_KEY}
    st, body = fake.http("POST", f"/_fake/queues/{ENTITY}/default/items", secret_spec, key=None)
    check("/_fake/queues/<entity>/<queue>/items pushes an item", st == 200 and "runQueueItemId" in body, body)
    st, body = fake.gql("popFromRunQueue", pop_vars)
    first = ((body.get("data") or {}).get("popFromRunQueue") or {}).get("runQueueItemId")
    st, body = fake.gql("popFromRunQueue", pop_vars)
    check("a leased item is not handed out twice", body.get("data") == {"popFromRunQueue": None}, body)
    time.sleep(2.3)
    st, body = fake.gql("popFromRunQueue", pop_vars)
    again = ((body.get("data") or {}).get("popFromRunQueue") or {})
    check("an item not acked within --ack-timeout is put back and popped again",
          first is not None and again.get("runQueueItemId") == first, (first, body))
    st, body = fake.gql("updateRunQueueItemWarning", {"runQueueItemId": first, "message": "slow pull",
                                                      "stage": "run", "filePaths": None})
    check("updateRunQueueItemWarning succeeds",
          body.get("data", {}).get("updateRunQueueItemWarning") == {"success": True}, body)
    st, body = fake.gql("failRunQueueItem", {"runQueueItemId": first, "message": "boom", "stage": "agent"})
    check("failRunQueueItem succeeds", body.get("data", {}).get("failRunQueueItem") == {"success": True}, body)
    st, state = fake.http("GET", "/_fake/state", key=None)
    failed = [i for i in state["items"] if i["id"] == first]
    check("failed item has state FAILED with the message and stage",
          failed and failed[0]["state"] == "FAILED" and failed[0]["error"]["message"] == "boom"
          and failed[0]["error"]["stage"] == "agent" and len(failed[0]["warnings"]) == 1, failed)
    raw_events = json.dumps(fake.events()) + json.dumps(state)
    check("the API key never appears in /_fake/events or /_fake/state", API_KEY not in raw_events)

    # ---- stopPolling, unknown operation, unknown field, dropped connections -------------
    st, body = fake.http("POST", f"/_fake/agents/{agent_id}/stop", key=None)
    st, body = fake.gql("LaunchAgent", {"agentId": agent_id})
    check("/_fake/agents/<id>/stop sets stopPolling", body["data"]["launchAgent"]["stopPolling"] is True, body)
    st, body = fake.http("POST", "/graphql", {"query": "query Nope { somethingElse { id } }"})
    check("an unknown operation gets a GraphQL error naming it",
          st == 200 and body["data"] == {"somethingElse": None}
          and "not implemented" in body["errors"][0]["message"], body)
    check("the unknown operation is in the event log",
          any(e.get("operation") == "Nope" and e.get("errors") for e in fake.events()))
    st, body = fake.http("POST", "/graphql", {"query": "query X($a: ID!) { launchAgent(id: $a) { id bogus } }",
                                              "variables": {"a": agent_id}})
    check('an unknown field gets "Cannot query field"',
          st == 200 and 'Cannot query field "bogus" on type "LaunchAgent"' in body["errors"][0]["message"], body)
    st, body = fake.gql("pushToRunQueueByName#noRunSpec", {
        "entityName": ENTITY, "projectName": "model-registry", "queueName": "default",
        "runSpec": json.dumps({"entity": ENTITY, "project": PROJECT, "docker": {"docker_image": IMAGE}})})
    check("pushToRunQueueByName (no-runSpec variant) works",
          st == 200 and set(body["data"]["pushToRunQueueByName"]) == {"runQueueItemId"}, body)

    fake.http("POST", "/_fake/drop-connections?seconds=1", key=None)
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    dropped = False
    try:
        conn.request("POST", "/graphql", body=json.dumps({"query": OPS["Viewer"]["query"]}),
                     headers={"Authorization": "Basic " + base64.b64encode(f"api:{API_KEY}".encode()).decode(),
                              "Content-Type": "application/json"})
        conn.getresponse().read()
    except (http.client.HTTPException, ConnectionError, OSError):
        dropped = True
    finally:
        conn.close()
    check("/_fake/drop-connections closes GraphQL connections without an answer", dropped)
    time.sleep(1.2)
    st, body = fake.gql("Viewer", {})
    check("after the drop window GraphQL answers again", st == 200, (st, body))

    st, _ = fake.http("POST", "/_fake/reset", key=None)
    check("/_fake/reset clears events and queues",
          st == 200 and fake.events() == [] and fake.http("GET", "/_fake/state", key=None)[1]["queues"] == [])


# ---- job artifacts -------------------------------------------------------------------

JOB_NAME = "smoke-job"


def _wandb_env(fake: Fake, scratch: str) -> dict:
    return dict(os.environ, WANDB_BASE_URL=fake.base, WANDB_API_KEY=API_KEY, WANDB_ERROR_REPORTING="false",
                WANDB_CONFIG_DIR=scratch + "/config", WANDB_CACHE_DIR=scratch + "/cache",
                WANDB_DATA_DIR=scratch + "/data", WANDB_DIR=scratch, TMPDIR=scratch,
                NETRC=scratch + "/netrc", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")


def create_job(fake: Fake, venv: str, code_dir: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LAUNCH_AGENT_WANDB_VENV=venv)
    return subprocess.run(
        ["bash", os.path.join(HERE, "create_job_with_wandb.sh"), "--port", str(fake.port), "--api-key", API_KEY,
         "--entity", ENTITY, "--project", PROJECT, "--name", JOB_NAME, "--code-dir", code_dir,
         "--entry-point", "python train.py"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)


def _get_bytes(url: str, key: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if key is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"api:{key}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _local_files(root: str) -> dict[str, bytes]:
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            full = os.path.join(d, f)
            out[os.path.relpath(full, root).replace(os.sep, "/")] = open(full, "rb").read()
    return out


class ArtifactFetcher:
    """What a Rust backend does: fetch an artifact version's files over raw GraphQL + HTTP."""

    def __init__(self, fake: Fake, ops: dict):
        self.fake, self.ops = fake, ops

    def gql(self, op: str, variables: dict) -> dict:
        st, body = self.fake.http("POST", "/graphql", {"query": self.ops[op]["query"], "variables": variables})
        if st != 200 or body.get("errors"):
            raise AssertionError(f"{op}: HTTP {st} {body}")
        return body["data"]

    def manifest(self, artifact_id: str) -> dict:
        data = self.gql("FetchArtifactManifest", {"id": artifact_id})
        url = data["artifact"]["currentManifest"]["file"]["directUrl"]
        st, raw = _get_bytes(url)  # pre-signed style: no W&B auth
        assert st == 200, (st, url)
        return json.loads(raw)

    def file_urls(self, entity: str, project: str, collection: str, version: str, per_page: int = 5000) -> dict:
        urls, cursor = {}, None
        while True:
            data = self.gql("GetArtifactMembershipFileUrls", {
                "entity": entity, "project": project, "collection": collection, "alias": version,
                "cursor": cursor, "perPage": per_page})
            files = data["project"]["artifactCollection"]["artifactMembership"]["files"]
            for e in files["edges"]:
                urls[e["node"]["name"]] = e["node"]["directUrl"]
            if not files["pageInfo"]["hasNextPage"]:
                return urls
            cursor = files["pageInfo"]["endCursor"]

    def download(self, entity: str, project: str, collection: str, version: str, artifact_id: str,
                 per_page: int = 5000) -> tuple[dict, dict[str, bytes], list[str]]:
        """-> (manifest, {path: bytes}, [paths whose MD5 differs from the manifest])"""
        import hashlib

        manifest = self.manifest(artifact_id)
        urls = self.file_urls(entity, project, collection, version, per_page)
        files, bad = {}, []
        for path, url in urls.items():
            st, raw = _get_bytes(url)
            assert st == 200, (st, path, url)
            files[path] = raw
            want = manifest["contents"][path]["digest"]
            if base64.b64encode(hashlib.md5(raw).digest()).decode() != want:
                bad.append(path)
        return manifest, files, bad


def run_job_artifact_checks(fake: Fake, venv: str, ops_doc: dict) -> None:
    fetch_doc = ops_doc.get("job_artifact_fetch") or {}
    check("operations.json has job_artifact_fetch for the installed wandb",
          fetch_doc.get("wandb_version") == ops_doc["wandb_version"]
          and {"ArtifactMembershipByName", "FetchArtifactManifest", "GetArtifactMembershipFileUrls",
               "ArtifactByID"} <= set(fetch_doc.get("operations") or {}), sorted(fetch_doc.get("operations") or {}))
    ops = fetch_doc["operations"]
    tmp = tempfile.mkdtemp(prefix="wandb-fake-job-")
    try:
        code = os.path.join(tmp, "code")
        os.makedirs(os.path.join(code, "pkg", "deep"))
        with open(os.path.join(code, "train.py"), "w") as f:
            f.write("import wandb\nprint('training v0')\n")
        with open(os.path.join(code, "requirements.txt"), "w") as f:
            f.write("wandb\nnumpy==1.26.4\n")
        with open(os.path.join(code, "pkg", "__init__.py"), "w") as f:
            f.write("")
        with open(os.path.join(code, "pkg", "deep", "blob.bin"), "wb") as f:
            f.write(bytes(range(256)) * 40 + os.urandom(1234))
        local = _local_files(code)

        r = create_job(fake, venv, code)
        check("real `wandb job create ... code DIR` exits 0 and reports v0",
              r.returncode == 0 and f"{ENTITY}/{PROJECT}/{JOB_NAME}:v0" in r.stdout, r.stdout[-3000:])
        unknown = [e for e in fake.events() if e.get("errors")]
        check("`wandb job create` sent nothing the fake refused or does not know", not unknown, unknown[:3])
        names = [e.get("operation") for e in fake.events()]
        check("`wandb job create` used CreateArtifact, CreateArtifactManifest, CreateArtifactFiles, "
              "storage PUTs and CommitArtifact",
              all(n in names for n in ("CreateArtifact", "CreateArtifactManifest", "CreateArtifactFiles",
                                       "storage-put", "CommitArtifact")), names)
        st, state = fake.http("GET", "/_fake/state", key=None)
        arts = {(a["collection"], a["versionIndex"]): a for a in state.get("artifacts", [])}
        job_a, code_a = arts.get((JOB_NAME, 0)), arts.get(("code-" + JOB_NAME, 0))
        check("fake holds a committed job artifact and a committed code artifact, both aliased latest",
              bool(job_a and code_a) and job_a["type"] == "job" and code_a["type"] == "code"
              and job_a["state"] == code_a["state"] == "COMMITTED"
              and "latest" in job_a["aliases"] and "latest" in code_a["aliases"], arts)

        # ---- fetch ENTITY/PROJECT/NAME:latest over raw GraphQL, as a Rust backend would ----
        fx = ArtifactFetcher(fake, ops)
        data = fx.gql("ArtifactMembershipByName", {"entity": ENTITY, "project": PROJECT,
                                                   "name": f"{JOB_NAME}:latest"})
        m = (data.get("project") or {}).get("artifactCollectionMembership") or {}
        art = m.get("artifact") or {}
        check("ArtifactMembershipByName(NAME:latest) -> job artifact v0, COMMITTED",
              art.get("artifactType", {}).get("name") == "job" and art.get("state") == "COMMITTED"
              and m.get("versionIndex") == 0 and m["artifactCollection"]["name"] == JOB_NAME
              and m["artifactCollection"]["project"]["entity"]["name"] == ENTITY
              and "latest" in [a["alias"] for a in m.get("aliases", [])], m)
        job_id, job_ver = art.get("id"), f"v{m.get('versionIndex')}"
        manifest, job_files, bad = fx.download(ENTITY, PROJECT, JOB_NAME, job_ver, job_id)
        check("job artifact manifest lists wandb-job.json and requirements.frozen.txt, files match its MD5s",
              {"wandb-job.json", "requirements.frozen.txt"} <= set(manifest.get("contents", {}))
              and set(job_files) == set(manifest["contents"]) and not bad, (manifest, bad))
        job = json.loads(job_files.get("wandb-job.json") or b"{}")
        src = job.get("source") or {}
        check("wandb-job.json: source_type artifact, entrypoint, notebook, runtime, _version, types",
              job.get("source_type") == "artifact" and src.get("entrypoint") == ["python", "train.py"]
              and src.get("notebook") is False and str(job.get("runtime", "")).startswith("3.")
              and job.get("_version") == "v0" and isinstance(job.get("input_types"), dict)
              and isinstance(job.get("output_types"), dict), job)
        check("requirements.frozen.txt carries requirements.txt",
              job_files.get("requirements.frozen.txt", b"").split() == [b"wandb", b"numpy==1.26.4"],
              job_files.get("requirements.frozen.txt"))
        prefix = "wandb-artifact://_id/"
        code_id = src.get("artifact", "")[len(prefix):] if src.get("artifact", "").startswith(prefix) else None
        check("wandb-job.json source.artifact is wandb-artifact://_id/<code artifact id>",
              code_id == code_a["id"] if code_a else False, src.get("artifact"))
        data = fx.gql("ArtifactByID", {"id": code_id})
        ca = data.get("artifact") or {}
        seq = ca.get("artifactSequence") or {}
        check("ArtifactByID(code id) -> type code, collection code-NAME, entity/project, version",
              ca.get("artifactType", {}).get("name") == "code" and seq.get("name") == "code-" + JOB_NAME
              and seq.get("project", {}).get("name") == PROJECT
              and seq.get("project", {}).get("entity", {}).get("name") == ENTITY
              and ca.get("versionIndex") == 0 and ca.get("state") == "COMMITTED", ca)
        cmanifest, cfiles, cbad = fx.download(seq["project"]["entity"]["name"], seq["project"]["name"],
                                              seq["name"], f"v{ca['versionIndex']}", code_id)
        check("code artifact files download byte-identical to the job's source dir",
              cfiles == local and not cbad, (sorted(cfiles), sorted(local), cbad))
        _, paged, _ = fx.download(seq["project"]["entity"]["name"], seq["project"]["name"], seq["name"],
                                  f"v{ca['versionIndex']}", code_id, per_page=1)
        check("GetArtifactMembershipFileUrls pages (perPage 1, endCursor/hasNextPage) to the same files",
              paged == local, sorted(paged))
        data = fx.gql("ArtifactMembershipByName", {"entity": ENTITY, "project": PROJECT, "name": f"{JOB_NAME}:v0"})
        check("NAME:v0 resolves to the same job artifact",
              ((data["project"]["artifactCollectionMembership"] or {}).get("artifact") or {}).get("id") == job_id, data)
        data = fx.gql("ArtifactMembershipByName", {"entity": ENTITY, "project": PROJECT, "name": f"{JOB_NAME}:nope"})
        check("an unknown alias -> artifactCollectionMembership null",
              data["project"]["artifactCollectionMembership"] is None, data)
        st, _ = _get_bytes(f"{fake.base}/_fake/storage/wandb_artifacts/{'0' * 32}")
        check("GET of a storage object that does not exist is 404", st == 404, st)
        req = urllib.request.Request(f"{fake.base}/_fake/storage/wandb_artifacts/{'0' * 32}", data=b"x", method="PUT")
        try:
            st = urllib.request.urlopen(req, timeout=10).status
        except urllib.error.HTTPError as e:
            st = e.code
        check("a storage PUT whose bytes do not match the MD5 in its path is refused", st == 400, st)

        # ---- the real Python agent's fetch path --------------------------------------------
        scratch = os.path.join(tmp, "scratch")
        os.makedirs(scratch)
        out = os.path.join(tmp, "fetched")
        r = subprocess.run([os.path.join(venv, "bin", "python"), os.path.join(HERE, "fetch_job_with_wandb.py"),
                            f"{ENTITY}/{PROJECT}/{JOB_NAME}:latest", out], env=_wandb_env(fake, scratch),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
        try:
            res = json.loads(r.stdout)
        except ValueError:
            res = {}
        got = _local_files(os.path.join(out, "project")) if res else {}
        got.pop("requirements.frozen.txt", None)  # copied in from the job artifact by the agent
        check("real Api().job(...).configure_launch_project fetches the job and its code byte-identical",
              r.returncode == 0 and got == local and res.get("set", {}).get("job_source_type") == "artifact"
              and res["set"].get("job_entry_point") == ["python", "train.py"]
              and res["set"]["job_source_info"]["artifact_string"] == f"{ENTITY}/{PROJECT}/code-{JOB_NAME}:v0",
              (r.returncode, r.stderr[-2000:], sorted(got)))
        evs = fake.events()
        fetch_ops = [e.get("operation") for e in evs if e.get("kind") in ("query", "mutation")
                     and "W&B" in (e.get("userAgent") or "")]
        check("the real agent's fetch used the recorded operations",
              all(o in fetch_ops for o in ("ArtifactMembershipByName", "FetchArtifactManifest",
                                           "GetArtifactMembershipFileUrls", "ArtifactByID")), fetch_ops)
        recorded = {o["query"] for o in ops.values()}
        sent = {e["query"] for e in evs if e.get("operation") in ("ArtifactMembershipByName", "FetchArtifactManifest",
                                                                   "GetArtifactMembershipFileUrls", "ArtifactByID")}
        check("the texts the real client sent equal those recorded in operations.json", sent <= recorded,
              sorted(sent - recorded)[:1])

        # ---- a second version: latest moves, v0 stays ----------------------------------------
        with open(os.path.join(code, "train.py"), "w") as f:
            f.write("import wandb\nprint('training v1')\n")
        n_before = len(fake.events())
        r = create_job(fake, venv, code)
        puts = [e["path"] for e in fake.events()[n_before:] if e.get("operation") == "storage-put"]
        all_puts = [e["path"] for e in fake.events() if e.get("operation") == "storage-put"
                    and "/wandb_artifacts/" in e["path"]]
        check("the second create uploads only new content (file already stored -> uploadUrl null)",
              len(all_puts) == len(set(all_puts)) and any("/wandb_artifacts/" in p for p in puts), puts)
        check("a second `wandb job create` with changed code makes v1",
              r.returncode == 0 and f"{ENTITY}/{PROJECT}/{JOB_NAME}:v1" in r.stdout, r.stdout[-3000:])
        data = fx.gql("ArtifactMembershipByName", {"entity": ENTITY, "project": PROJECT, "name": f"{JOB_NAME}:latest"})
        m1 = data["project"]["artifactCollectionMembership"] or {}
        data = fx.gql("ArtifactMembershipByName", {"entity": ENTITY, "project": PROJECT, "name": f"{JOB_NAME}:v0"})
        m0 = data["project"]["artifactCollectionMembership"] or {}
        check("NAME:latest is now v1 and NAME:v0 is still the first version",
              m1.get("versionIndex") == 1 and m0.get("versionIndex") == 0
              and m0.get("artifact", {}).get("id") == job_id
              and "latest" not in [a["alias"] for a in m0.get("aliases", [])], (m1.get("versionIndex"), m0))
        _, jf1, _ = fx.download(ENTITY, PROJECT, JOB_NAME, "v1", m1["artifact"]["id"])
        code1 = json.loads(jf1["wandb-job.json"])["source"]["artifact"][len(prefix):]
        ca1 = fx.gql("ArtifactByID", {"id": code1})["artifact"]
        _, cf1, _ = fx.download(ENTITY, PROJECT, ca1["artifactSequence"]["name"], f"v{ca1['versionIndex']}", code1)
        check("v1's code artifact is code-NAME:v1 with the new train.py",
              ca1["versionIndex"] == 1 and cf1 == _local_files(code), sorted(cf1))

        # ---- a queue item naming the job (what the agent pops) ----------------------------
        env = dict(os.environ, LAUNCH_AGENT_WANDB_VENV=venv)
        r = subprocess.run(
            ["bash", os.path.join(HERE, "submit_with_wandb.sh"), "--port", str(fake.port), "--api-key", API_KEY,
             "--queue", "default", "--entity", ENTITY, "--project", PROJECT,
             "--job", f"{ENTITY}/{PROJECT}/{JOB_NAME}:latest"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)
        check("real `wandb launch --queue default --job ENTITY/PROJECT/NAME:latest` exits 0",
              r.returncode == 0, r.stdout[-3000:])
        st, body = fake.gql("popFromRunQueue", {"entity": ENTITY, "project": "model-registry",
                                                "queueName": "default", "launchAgentId": None})
        item = (body.get("data") or {}).get("popFromRunQueue") or {}
        spec = json.loads(item.get("runSpec") or "{}")
        check("the popped runSpec names the job (runSpec.job = ENTITY/PROJECT/NAME:latest, no image)",
              spec.get("job") == f"{ENTITY}/{PROJECT}/{JOB_NAME}:latest" and spec.get("entity") == ENTITY
              and spec.get("project") == PROJECT and not (spec.get("docker") or {}).get("docker_image"), spec)
    finally:
        if FAILED == 0:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    rc = 1
    try:
        rc = main()
    except Exception as e:  # report, count as a failure
        import traceback

        traceback.print_exc()
        FAILED += 1
    print(f"{PASSED} passed, {FAILED} failed")
    sys.exit(0 if FAILED == 0 and rc == 0 else 1)
