#!/usr/bin/env python3
"""Extract the exact GraphQL operation texts the real `wandb` launch client sends.

Run with the venv's python (see setup.sh):

    "$VENV/bin/python" tests/wandb_fake/extract_operations.py > host/src/wandb/operations.json

(the file lives with the agent's W&B client, host/src/wandb/, which sends these texts;
the smoke test reads it from there too).

How the texts are obtained (no network, no server needed):
* Python-side operations (wandb/sdk/launch/api.py, class LaunchApi - used by both the
  launch agent and `wandb launch --queue`): each LaunchApi method is called with its
  `_service_api` replaced by a recorder, so the query string and the variables are
  exactly what the method would hand to the wandb-core sidecar (which forwards them
  unchanged to WANDB_BASE_URL/graphql). Queries built with f-strings come out fully
  expanded, in the variant the agent uses.
* Operations generated inside the Go sidecar `wandb/bin/wandb-core` (genqlient):
  `Viewer` (login check) and `CreateRunQueue` (used when the entity has no queue) are
  cut out of the binary by brace matching.
* Job artifacts (`job_artifact_fetch`, `job_artifact_create`): recorded OFF THE WIRE. The
  fake server (server.py, 127.0.0.1 only) is started, the real CLI creates a code job
  (create_job_with_wandb.sh = `wandb job create ... code DIR`), then the real Python
  agent's fetch path runs (fetch_job_with_wandb.py = `Api().job(name, path)` +
  `Job.configure_launch_project`), and the texts are taken from the fake's event log.
  The wire is the only faithful source here: wandb-core rewrites artifact queries before
  sending them (e.g. it strips `digestAlgorithm` when the server does not announce the
  ARTIFACT_DIGEST_ALGORITHM feature; the fake announces no features).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import wandb
from wandb.sdk.launch.api import LaunchApi

SRC = "wandb/sdk/launch/api.py"


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.responses: list[Any] = []

    def execute_graphql(self, query: str, variables: dict | None = None) -> Any:
        self.calls.append((query, dict(variables or {})))
        r = self.responses.pop(0)
        if isinstance(r, Exception):
            raise r
        return r

    def send_api_request(self, *a: Any, **k: Any) -> Any:  # pragma: no cover
        raise RuntimeError("unexpected sidecar API request")


def capture(fn, responses: list, *args: Any, **kwargs: Any) -> list[tuple[str, dict]]:
    api = LaunchApi.__new__(LaunchApi)
    rec = Recorder()
    rec.responses = list(responses)
    api._service_api = rec  # type: ignore[attr-defined]
    fn(api, *args, **kwargs)
    return rec.calls


def op_name(query: str) -> str:
    import re

    m = re.search(r"\b(query|mutation)\s+(\w+)", query)
    assert m, query
    return m.group(2)


def kind(query: str) -> str:
    import re

    return re.search(r"\b(query|mutation)\b", query).group(1)


def from_binary(path: str, start: str) -> str:
    data = open(path, "rb").read()
    i = data.find(start.encode())
    if i < 0:
        raise SystemExit(f"{start!r} not found in {path}")
    depth, j, started = 0, i, False
    while True:
        c = data[j : j + 1]
        if c == b"{":
            depth += 1
            started = True
        elif c == b"}":
            depth -= 1
            if started and depth == 0:
                break
        j += 1
    return data[i : j + 1].decode()


HERE = os.path.dirname(os.path.abspath(__file__))
GEN_OPS = "wandb/sdk/artifacts/_generated/operations.py"
PY_SOURCES = {
    "ArtifactMembershipByName": (GEN_OPS + ": ARTIFACT_MEMBERSHIP_BY_NAME_GQL, via "
                                 "wandb/sdk/artifacts/artifact.py Artifact._from_name "
                                 "(Api.job -> Api._artifact(name, type='job'))"),
    "FetchArtifactManifest": GEN_OPS + ": FETCH_ARTIFACT_MANIFEST_GQL, via Artifact._fetch_manifest",
    "GetArtifactMembershipFileUrls": (GEN_OPS + ": GET_ARTIFACT_MEMBERSHIP_FILE_URLS_GQL, via "
                                      "Artifact._fetch_file_urls (paged)"),
    "ArtifactByID": (GEN_OPS + ": ARTIFACT_BY_ID_GQL, via Artifact._from_id "
                     "(Job._get_code_artifact for 'wandb-artifact://_id/<ID>')"),
    "ServerFeaturesQuery": "wandb/bin/wandb-core (feature check before artifact queries)",
    "GetDefaultEntity": "wandb/apis/public/api.py Api.default_entity",
    "Viewer": "wandb/bin/wandb-core (login check)",
}


def _http_json(url: str, method: str = "GET") -> Any:
    import urllib.request

    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def capture_job_artifact_ops() -> tuple[dict, dict]:
    """Create a code job with the real CLI against the fake, fetch it the way the agent
    does, and return the operations seen on the wire (fetch phase, create phase)."""
    import shutil
    import subprocess
    import tempfile
    import time

    tmp = tempfile.mkdtemp(prefix="wandb-ops-")
    key = "e" * 40
    code = os.path.join(tmp, "code")
    os.makedirs(code)
    with open(os.path.join(code, "train.py"), "w") as f:
        f.write("print('hello')\n")
    with open(os.path.join(code, "requirements.txt"), "w") as f:
        f.write("wandb\n")
    port_file = os.path.join(tmp, "port")
    log = open(os.path.join(tmp, "server.log"), "w")
    srv = subprocess.Popen([sys.executable, os.path.join(HERE, "server.py"), "--port-file", port_file,
                            "--api-key", key, "--entity", "ENTITY"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 15
        while not os.path.exists(port_file):
            if time.time() > deadline or srv.poll() is not None:
                raise SystemExit("fake server did not start")
            time.sleep(0.05)
        port = int(open(port_file).read())
        base = f"http://127.0.0.1:{port}"
        venv = os.path.dirname(os.path.dirname(sys.executable))
        env = dict(os.environ, LAUNCH_AGENT_WANDB_VENV=venv)
        subprocess.run(["bash", os.path.join(HERE, "create_job_with_wandb.sh"), "--port", str(port),
                        "--api-key", key, "--entity", "ENTITY", "--project", "PROJECT", "--name", "JOB",
                        "--code-dir", code], env=env, check=True, stdout=sys.stderr, stderr=sys.stderr,
                       timeout=300)
        n_create = len(_http_json(base + "/_fake/events"))
        scratch = os.path.join(tmp, "scratch")
        os.makedirs(scratch)
        fenv = dict(os.environ, WANDB_BASE_URL=base, WANDB_API_KEY=key, WANDB_ERROR_REPORTING="false",
                    WANDB_CONFIG_DIR=scratch + "/config", WANDB_CACHE_DIR=scratch + "/cache",
                    WANDB_DATA_DIR=scratch + "/data", WANDB_DIR=scratch, TMPDIR=scratch,
                    NETRC=scratch + "/netrc", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        subprocess.run([sys.executable, os.path.join(HERE, "fetch_job_with_wandb.py"),
                        "ENTITY/PROJECT/JOB:latest", os.path.join(tmp, "out")],
                       env=fenv, check=True, stdout=sys.stderr, stderr=sys.stderr, timeout=300)
        events = _http_json(base + "/_fake/events")
    finally:
        srv.terminate()
        srv.wait(10)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)

    def collect(evs: list[dict], what: str) -> dict:
        ops: dict[str, dict] = {}
        seq: list[str] = []
        for e in evs:
            if e.get("kind") in ("query", "mutation"):
                q = e["query"]
                name = e["operation"]
                variant = name
                i = 2
                while variant in ops and ops[variant]["query"] != q:
                    variant = f"{name}#{i}"
                    i += 1
                if variant not in ops:
                    ops[variant] = {"operationName": name, "kind": e["kind"],
                                    "source": PY_SOURCES.get(name, "observed on the wire (" + what + ")"),
                                    "query": q, "exampleVariables": e.get("variables")}
                seq.append(variant)
            elif e.get("kind") == "http":
                p = e.get("path", "")
                if e.get("method") in ("GET", "PUT") and p.startswith("/_fake/storage/"):
                    seq.append(f"{e['method']} <{'directUrl' if e['method'] == 'GET' else 'uploadUrl'}> "
                               f"({p.split('/')[3]})")
                elif e.get("operation") == "file_stream":
                    seq.append("POST /files/<entity>/<project>/<run>/file_stream")
                elif e.get("method") == "PUT":
                    seq.append("PUT <run file uploadUrl>")
        return {"sequence": seq, "operations": ops}

    fetch = collect(events[n_create:], "fetch")
    fetch.update({
        "wandb_version": wandb.__version__,
        "how": "fetch_job_with_wandb.py ENTITY/PROJECT/JOB:latest = wandb.apis.public.Api().job(name, path) + "
               "Job.configure_launch_project(project) (wandb/apis/public/jobs.py), i.e. what "
               "LaunchProject._fetch_job (wandb/sdk/launch/_project_spec.py) does in the agent",
        "note": "query texts as sent on the wire by wandb-core to a server WITHOUT the "
                "ARTIFACT_DIGEST_ALGORITHM feature; with it, ArtifactFragment also has "
                "`digestAlgorithm @include(if: true)`. directUrl GETs carry no W&B auth.",
    })
    create = collect(events[:n_create], "create")
    create.update({
        "wandb_version": wandb.__version__,
        "how": "create_job_with_wandb.sh = wandb job create --project PROJECT --entity ENTITY --name JOB "
               "code DIR --entry-point 'python train.py'",
    })
    return fetch, create


def main() -> int:
    ops: dict[str, dict] = {}

    def add(calls, func, key=None, note=None):
        for q, v in calls:
            name = key or op_name(q)
            if "hostname" in v:
                v["hostname"] = "HOSTNAME"
            ops[name] = {
                "operationName": op_name(q),
                "kind": kind(q),
                "source": f"{SRC}: LaunchApi.{func}",
                "query": q,
                "exampleVariables": v,
            }
            if note:
                ops[name]["note"] = note

    queues = {"project": {"runQueues": [{"id": "UQ==", "name": "default", "createdBy": "u", "access": "PROJECT"}]}}
    add(capture(LaunchApi.get_project_run_queues, [queues], "ENTITY", "model-registry"), "get_project_run_queues")
    calls = capture(
        LaunchApi.create_launch_agent,
        [queues, {"createLaunchAgent": {"launchAgentId": "A"}}],
        "ENTITY", "model-registry", ["default"], {"entity": "ENTITY", "queues": ["default"]}, "wandb@" + wandb.__version__,
    )
    add(calls[1:], "create_launch_agent",
        note="preceded by ProjectRunQueues(entity, 'model-registry') to map queue names to ids")
    add(capture(LaunchApi.get_launch_agent, [{"launchAgent": {}}], "AGENT_ID"), "get_launch_agent")
    add(capture(LaunchApi.update_launch_agent_status, [{"updateLaunchAgent": {"success": True}}],
                "AGENT_ID", "POLLING"), "update_launch_agent_status",
        note="agentStatus values used by the agent: POLLING, RUNNING, KILLED")
    add(capture(LaunchApi.pop_from_run_queue, [{"popFromRunQueue": None}], "default",
                entity="ENTITY", project="model-registry", agent_id="AGENT_ID"), "pop_from_run_queue",
        note="runSpec comes back as a JSON-encoded string (JSONString); null when the queue is empty")
    add(capture(LaunchApi.ack_run_queue_item, [{"ackRunQueueItem": {"success": True}}], "ITEM_ID", "RUN_ID"),
        "ack_run_queue_item")
    add(capture(LaunchApi.fail_run_queue_item, [{"failRunQueueItem": {"success": True}}],
                "ITEM_ID", "message", "agent", ["path"]), "fail_run_queue_item",
        note="stage is one of agent, build, run")
    add(capture(LaunchApi.update_run_queue_item_warning, [{"updateRunQueueItemWarning": {"success": True}}],
                "ITEM_ID", "message", "run", None), "update_run_queue_item_warning")
    add(capture(LaunchApi.entity_is_team, [{"entity": {"id": "E", "isTeam": False}}], "ENTITY"), "entity_is_team")
    add(capture(LaunchApi.check_stop_requested, [{"project": None}], "PROJECT", "ENTITY", "RUN_ID"),
        "check_stop_requested")
    add(capture(LaunchApi.get_run_state, [{"project": {"run": {"state": "running"}}}], "ENTITY", "PROJECT", "RUN_ID"),
        "get_run_state")
    spec = json.dumps({"entity": "ENTITY", "project": "PROJECT", "docker": {"docker_image": "busybox:latest"}})
    add(capture(LaunchApi.push_to_run_queue_by_name,
                [{"pushToRunQueueByName": {"runQueueItemId": "I", "runSpec": spec}}],
                "ENTITY", "model-registry", "default", spec, None), "push_to_run_queue_by_name",
        note="first choice of `wandb launch --queue`; priority / templateVariableValues are added to the "
             "text only when given")
    add(capture(LaunchApi.push_to_run_queue_by_name,
                [Exception('Cannot query field "runSpec" on type "PushToRunQueueByNamePayload"'),
                 {"pushToRunQueueByName": {"runQueueItemId": "I"}}],
                "ENTITY", "model-registry", "default", spec, None)[1:], "push_to_run_queue_by_name",
        key="pushToRunQueueByName#noRunSpec", note="fallback for servers without runSpec on the payload")
    calls = capture(LaunchApi.push_to_run_queue,
                    [{"pushToRunQueueByName": None}, queues, {"pushToRunQueue": {"runQueueItemId": "I"}}],
                    "default", json.loads(spec), None, "model-registry")
    add(calls[2:], "push_to_run_queue",
        note="legacy path of `wandb launch --queue` when pushToRunQueueByName fails (e.g. queue missing): "
             "ProjectRunQueues, CreateRunQueue if the 'default' queue is missing, then pushToRunQueue(queueID)")

    core = os.path.join(os.path.dirname(wandb.__file__), "bin", "wandb-core")
    for start, note in (("query Viewer {", "login check; sent by wandb-core (genqlient)"),
                        ("mutation CreateRunQueue (", "sent by wandb-core when a queue must be created")):
        q = from_binary(core, start)
        ops[op_name(q)] = {"operationName": op_name(q), "kind": kind(q),
                           "source": "wandb/bin/wandb-core (Go sidecar, genqlient-generated)",
                           "query": q, "note": note}

    fetch, create = capture_job_artifact_ops()

    out = {
        "_comment": "GraphQL operation texts of the real W&B launch client, extracted by "
                    "tests/wandb_fake/extract_operations.py from the installed package. Do not edit by hand.",
        "wandb_version": wandb.__version__,
        "endpoint": "POST {WANDB_BASE_URL}/graphql, JSON body {query, variables}, "
                    "HTTP basic auth user 'api' password = API key",
        "operations": ops,
        "job_artifact_fetch": fetch,
        "job_artifact_create": create,
    }
    json.dump(out, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
