#!/usr/bin/env python3
"""FAKE W&B server for tests: NOT the real W&B backend.

A protocol-faithful, in-memory stand-in for the parts of the W&B GraphQL API that
`wandb launch --queue ...` (the real Python client) and a launch agent use. It is
built for tests of our Rust launch agent and for driving the real `wandb` client
against something that is not the internet.

Only the Python standard library is used (http.server + json).

* `POST /graphql` (also `/graphql/`): a small GraphQL executor. Requests are parsed
  (operations, variables, fragments, aliases, inline fragments), the root fields are
  dispatched to resolvers by field name, and every resolver result is projected onto
  the request's selection set. Asking for a field the fake's object does not have
  yields the same kind of error the real server gives
  (`Cannot query field "x" on type "T".`), so a client that asks for something the
  real API does not have fails here too.
* Auth: HTTP basic auth, user `api`, password = the API key configured with
  `--api-key`. A wrong or missing key gets HTTP 401, as does every request when
  `--reject-all` is given.
* Unknown root fields / operations are logged to stderr and to the event log and
  answered with a GraphQL error, so missing operations are easy to find.
* Test control endpoints (no auth, loopback only):
    GET  /_fake/events                           ordered list of operations received
    GET  /_fake/state                            queues, items, agents, runs, artifacts (debug)
    POST /_fake/queues/<entity>/<queue>/items    body = runSpec (JSON object) -> push
                                                 (?project=P, default model-registry;
                                                 ?priority=N); creates the queue if needed
    POST /_fake/queues/<entity>/<queue>          create a queue (?project=P)
    POST /_fake/agents/<id>/stop                 set stopPolling on a launch agent
    POST /_fake/runs/<entity>/<project>/<run>    body {"state": "...", "stopped": bool}
    POST /_fake/reset                            drop all state and events
    POST /_fake/drop-connections?count=N         close the next N /graphql connections
    POST /_fake/drop-connections?seconds=N       for N seconds (default 5) close
                                                 /graphql connections without answering
    POST /_fake/shutdown                         stop the server
* Artifacts (job artifacts of W&B Launch; see README "Job artifacts"): createArtifact,
  createArtifactManifest, updateArtifactManifest, createArtifactFiles, commitArtifact,
  useArtifact mutations; project.artifactCollectionMembership / artifactCollection /
  artifact / artifactType and root artifact(id) queries. Object storage is served by the
  fake itself:
    PUT  /_fake/storage/<key>                    uploadUrl (no auth; file keys are
                                                 wandb_artifacts/<md5hex>, bytes must match)
    GET  /_fake/storage/<key>                    directUrl (no auth, like a pre-signed URL)
    GET  /artifactsV2/<region>/.../<md5hex>/<name>  the client's authenticated fallback

The event log redacts the configured API key anywhere it appears and any value
stored under a key named like `*api_key*`/`*apiKey*` (e.g. runSpec `_wandb_api_key`).
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import http.server
import io
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from typing import Any, Callable

LAUNCH_DEFAULT_PROJECT = "model-registry"
REDACTED = "<redacted>"

# --------------------------------------------------------------------------------------
# A small GraphQL parser (executable documents only).
# --------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>[\s,\ufeff]+|\#[^\n]*)
  | (?P<spread>\.\.\.)
  | (?P<punct>[!$()\[\]{}:=@|&])
  | (?P<blockstring>\"\"\"(?:\\\"\"\"|[^\"]|\"(?!\"\"))*\"\"\")
  | (?P<string>"(?:\\.|[^"\\\n])*")
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
    """,
    re.VERBOSE,
)


class GraphQLSyntaxError(Exception):
    pass


class GraphQLFieldError(Exception):
    """An error attached to a field path (becomes an entry of `errors`)."""

    def __init__(self, message: str, path: list | None = None):
        super().__init__(message)
        self.message = message
        self.path = path or []


def _tokenize(src: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    while pos < len(src):
        m = _TOKEN_RE.match(src, pos)
        if not m:
            raise GraphQLSyntaxError(f"Syntax Error: Unexpected character {src[pos]!r} at {pos}")
        kind = m.lastgroup
        if kind != "ws":
            out.append((kind, m.group(kind)))
        pos = m.end()
    out.append(("eof", ""))
    return out


class _Parser:
    def __init__(self, src: str):
        self.toks = _tokenize(src)
        self.i = 0

    def peek(self, kind: str | None = None, value: str | None = None) -> bool:
        k, v = self.toks[self.i]
        return (kind is None or k == kind) and (value is None or v == value)

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        k, v = self.toks[self.i]
        if (kind is not None and k != kind) or (value is not None and v != value):
            raise GraphQLSyntaxError(f"Syntax Error: Expected {value or kind}, found {v or k!r}")
        self.i += 1
        return v

    def document(self) -> dict:
        ops, frags = [], {}
        while not self.peek("eof"):
            if self.peek("punct", "{"):
                ops.append({"type": "query", "name": None, "vars": {}, "sel": self.selection_set()})
            elif self.peek("name", "fragment"):
                self.take()
                name = self.take("name")
                self.take("name", "on")
                cond = self.take("name")
                self.directives()
                frags[name] = {"on": cond, "sel": self.selection_set()}
            elif self.peek("name") and self.toks[self.i][1] in ("query", "mutation", "subscription"):
                typ = self.take()
                name = self.take("name") if self.peek("name") else None
                var_defs = self.variable_definitions() if self.peek("punct", "(") else {}
                self.directives()
                ops.append({"type": typ, "name": name, "vars": var_defs, "sel": self.selection_set()})
            else:
                raise GraphQLSyntaxError(f"Syntax Error: Unexpected {self.toks[self.i][1]!r}")
        return {"ops": ops, "frags": frags}

    def variable_definitions(self) -> dict:
        self.take("punct", "(")
        defs = {}
        while not self.peek("punct", ")"):
            self.take("punct", "$")
            name = self.take("name")
            self.take("punct", ":")
            typ = self.type_ref()
            default = None
            if self.peek("punct", "="):
                self.take()
                default = self.value(const=True)
            self.directives()
            defs[name] = {"type": typ, "default": default}
        self.take("punct", ")")
        return defs

    def type_ref(self) -> str:
        if self.peek("punct", "["):
            self.take()
            inner = self.type_ref()
            self.take("punct", "]")
            t = f"[{inner}]"
        else:
            t = self.take("name")
        if self.peek("punct", "!"):
            self.take()
            t += "!"
        return t

    def directives(self) -> list:
        ds = []
        while self.peek("punct", "@"):
            self.take()
            name = self.take("name")
            args = self.arguments() if self.peek("punct", "(") else {}
            ds.append((name, args))
        return ds

    def arguments(self) -> dict:
        self.take("punct", "(")
        args = {}
        while not self.peek("punct", ")"):
            name = self.take("name")
            self.take("punct", ":")
            args[name] = self.value()
        self.take("punct", ")")
        return args

    def value(self, const: bool = False) -> Any:
        k, v = self.toks[self.i]
        if k == "punct" and v == "$" and not const:
            self.take()
            return ("$var", self.take("name"))
        if k == "number":
            self.take()
            return float(v) if any(c in v for c in ".eE") else int(v)
        if k == "string":
            self.take()
            return json.loads(v)
        if k == "blockstring":
            self.take()
            return v[3:-3].replace('\\"""', '"""')
        if k == "name":
            self.take()
            if v == "true":
                return True
            if v == "false":
                return False
            if v == "null":
                return None
            return ("$enum", v)
        if k == "punct" and v == "[":
            self.take()
            out = []
            while not self.peek("punct", "]"):
                out.append(self.value(const))
            self.take()
            return ("$list", out)
        if k == "punct" and v == "{":
            self.take()
            out = {}
            while not self.peek("punct", "}"):
                key = self.take("name")
                self.take("punct", ":")
                out[key] = self.value(const)
            self.take()
            return ("$obj", out)
        raise GraphQLSyntaxError(f"Syntax Error: Unexpected {v or k!r} in value")

    def selection_set(self) -> list:
        self.take("punct", "{")
        sel = []
        while not self.peek("punct", "}"):
            if self.peek("spread"):
                self.take()
                if self.peek("name") and self.toks[self.i][1] != "on":
                    name = self.take("name")
                    self.directives()
                    sel.append({"kind": "spread", "name": name})
                else:
                    cond = None
                    if self.peek("name", "on"):
                        self.take()
                        cond = self.take("name")
                    self.directives()
                    sel.append({"kind": "inline", "on": cond, "sel": self.selection_set()})
                continue
            name = self.take("name")
            alias = None
            if self.peek("punct", ":"):
                self.take()
                alias, name = name, self.take("name")
            args = self.arguments() if self.peek("punct", "(") else {}
            directives = self.directives()
            sub = self.selection_set() if self.peek("punct", "{") else None
            sel.append({"kind": "field", "name": name, "alias": alias or name, "args": args,
                        "directives": directives, "sel": sub})
        self.take("punct", "}")
        return sel


def parse_document(src: str) -> dict:
    return _Parser(src).document()


def _resolve_value(v: Any, variables: dict) -> Any:
    if isinstance(v, tuple):
        tag, inner = v
        if tag == "$var":
            return variables.get(inner)
        if tag == "$enum":
            return inner
        if tag == "$list":
            return [_resolve_value(x, variables) for x in inner]
        if tag == "$obj":
            return {k: _resolve_value(x, variables) for k, x in inner.items()}
    return v


def _included(directives: list, variables: dict) -> bool:
    for name, args in directives:
        cond = _resolve_value(args.get("if"), variables)
        if name == "skip" and cond:
            return False
        if name == "include" and not cond:
            return False
    return True


# --------------------------------------------------------------------------------------
# Projection of resolver results onto selection sets.
# Objects are dicts; a "__typename" key names the GraphQL type (used in errors and for
# inline fragments). A value may be a callable taking the field's arguments (dict).
# --------------------------------------------------------------------------------------


# Interfaces / unions the fake's objects implement (fragment type conditions).
_IMPLEMENTS = {
    "ArtifactCollection": {"ArtifactSequence", "ArtifactPortfolio"},
}


def _type_matches(cond: str | None, typename: str) -> bool:
    return (cond is None or cond in (typename, "Node") or typename == "Object"
            or typename in _IMPLEMENTS.get(cond, ()))


def _flatten(sel: list, frags: dict, typename: str, variables: dict) -> list:
    out = []
    for s in sel:
        if s["kind"] == "field":
            if _included(s["directives"], variables):
                out.append(s)
        elif s["kind"] == "spread":
            frag = frags.get(s["name"])
            if frag is None:
                raise GraphQLFieldError(f'Unknown fragment "{s["name"]}".')
            if _type_matches(frag["on"], typename):
                out.extend(_flatten(frag["sel"], frags, typename, variables))
        else:
            if _type_matches(s["on"], typename):
                out.extend(_flatten(s["sel"], frags, typename, variables))
    return out


def project(value: Any, sel: list | None, frags: dict, variables: dict, path: list) -> Any:
    if value is None:
        return None
    if isinstance(value, list):
        return [project(v, sel, frags, variables, path + [i]) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        if sel:
            raise GraphQLFieldError(f"Field must not have a selection since it is a leaf", path)
        return value
    typename = value.get("__typename", "Object")
    if sel is None:
        # A JSON scalar (e.g. JSONString already decoded) - return as is.
        return {k: v for k, v in value.items() if k != "__typename"}
    out: dict = {}
    for f in _flatten(sel, frags, typename, variables):
        name = f["name"]
        if name == "__typename":
            out[f["alias"]] = typename
            continue
        if name not in value:
            raise GraphQLFieldError(f'Cannot query field "{name}" on type "{typename}".', path + [f["alias"]])
        v = value[name]
        if callable(v):
            v = v({k: _resolve_value(a, variables) for k, a in f["args"].items()})
        out[f["alias"]] = project(v, f["sel"], frags, variables, path + [f["alias"]])
    return out


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")


def _gid(kind: str, n: int) -> str:
    """Relay-style global id, like the real server's (base64 of `Kind:v1:N`)."""
    return base64.b64encode(f"{kind}:v1:{n}".encode()).decode()


class UnknownOperation(Exception):
    pass


class State:
    def __init__(self, ack_timeout: float, entity: str, username: str, seed_queues: list[str]):
        self.lock = threading.RLock()
        self.ack_timeout = ack_timeout
        self.entity = entity
        self.username = username
        self.seed_queues = seed_queues
        self.pop_runspec = "string"
        self.base_url = ""
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.seq = 0
            self.events: list[dict] = []
            # socket writes per response (see _CountingWriter)
            self.writes_per_response: list[int] = []
            self.queues: dict[str, dict] = {}  # id -> queue
            self.items: dict[str, dict] = {}  # id -> item
            self.agents: dict[str, dict] = {}  # id -> agent
            self.runs: dict[tuple, dict] = {}  # (entity, project, name) -> run
            self.drop_until = 0.0
            self.drop_next = 0
            # artifacts (see the "Artifacts" section below)
            self.artifacts: dict[str, dict] = {}  # id -> artifact version
            self.sequences: dict[tuple, dict] = {}  # (entity, project, name) -> collection
            self.manifests: dict[str, dict] = {}  # manifest id -> {artifactId, key}
            self.blobs: dict[str, bytes] = {}  # storage key -> bytes (served at /_fake/storage/<key>)
            self.blob_birth: dict[str, str] = {}  # md5 hex -> id of the artifact it was first uploaded for
            for spec in self.seed_queues:
                ent, _, name = spec.rpartition("/")
                self.create_queue(ent or self.entity, LAUNCH_DEFAULT_PROJECT, name, "PROJECT")

    def next_id(self) -> int:
        self.seq += 1
        return self.seq

    # ---- queues -------------------------------------------------------------------
    def find_queue(self, entity: str, project: str, name: str) -> dict | None:
        for q in self.queues.values():
            if q["entityName"] == entity and q["projectName"] == project and q["name"] == name:
                return q
        return None

    def create_queue(self, entity: str, project: str, name: str, access: str = "PROJECT",
                     prioritization_mode: str | None = None) -> dict:
        with self.lock:
            q = self.find_queue(entity, project, name)
            if q is not None:
                return q
            qid = _gid("RunQueue", self.next_id())
            q = {
                "id": qid,
                "name": name,
                "entityName": entity,
                "projectName": project,
                "createdBy": self.username,
                "access": access or "PROJECT",
                "prioritizationMode": prioritization_mode or "DISABLED",
                "defaultResourceConfigID": None,
                "createdAt": _now_iso(),
                "updatedAt": _now_iso(),
            }
            self.queues[qid] = q
            return q

    def push(self, queue: dict, run_spec: Any, priority: int | None = None,
             template_variables: Any = None) -> dict:
        with self.lock:
            if isinstance(run_spec, str):
                spec_obj = json.loads(run_spec)
            else:
                spec_obj = run_spec
            iid = _gid("RunQueueItem", self.next_id())
            item = {
                "id": iid,
                "queueId": queue["id"],
                "runSpec": spec_obj,
                "state": "PENDING",
                "priority": 2 if priority is None else int(priority),
                "templateVariableValues": template_variables,
                "createdAt": _now_iso(),
                "createdAtTs": time.time(),
                "order": self.seq,
                "leasedAt": None,
                "launchAgentId": None,
                "associatedRunId": None,
                "error": None,
                "warnings": [],
            }
            self.items[iid] = item
            return item

    def requeue_expired(self) -> None:
        now = time.time()
        with self.lock:
            for it in self.items.values():
                if it["state"] == "LEASED" and it["leasedAt"] is not None \
                        and now - it["leasedAt"] >= self.ack_timeout:
                    it["state"] = "PENDING"
                    it["leasedAt"] = None
                    it["launchAgentId"] = None

    def pop(self, queue: dict, agent_id: str | None) -> dict | None:
        self.requeue_expired()
        with self.lock:
            pending = [it for it in self.items.values()
                       if it["queueId"] == queue["id"] and it["state"] == "PENDING"]
            if not pending:
                return None
            if queue["prioritizationMode"] == "V0":
                pending.sort(key=lambda it: (it["priority"], it["order"]))
            else:
                pending.sort(key=lambda it: it["order"])
            it = pending[0]
            it["state"] = "LEASED"
            it["leasedAt"] = time.time()
            it["launchAgentId"] = agent_id
            return it

    # ---- object views (what GraphQL sees) -----------------------------------------
    def item_view(self, it: dict) -> dict:
        return {
            "__typename": "RunQueueItem",
            "id": it["id"],
            "state": it["state"],
            "associatedRunId": it["associatedRunId"],
            "runSpec": json.dumps(it["runSpec"]),
            "priority": it["priority"],
            "createdAt": it["createdAt"],
            "updatedAt": it["createdAt"],
            "templateVariableValues": json.dumps(it["templateVariableValues"])
            if it["templateVariableValues"] is not None else None,
            "launchAgentId": it["launchAgentId"],
            "error": it["error"],
            "warnings": [dict(w, __typename="RunQueueItemWarning") for w in it["warnings"]],
        }

    def queue_view(self, q: dict) -> dict:
        def items(_args: dict) -> dict:
            its = [it for it in self.items.values() if it["queueId"] == q["id"]]
            its.sort(key=lambda it: it["order"])
            return {"__typename": "RunQueueItemConnection",
                    "edges": [{"__typename": "RunQueueItemEdge", "node": self.item_view(it)} for it in its],
                    "pageInfo": {"__typename": "PageInfo", "hasNextPage": False, "endCursor": None}}

        def item(args: dict) -> dict | None:
            it = self.items.get(str(args.get("id")))
            return self.item_view(it) if it and it["queueId"] == q["id"] else None

        return {
            "__typename": "RunQueue",
            "id": q["id"],
            "name": q["name"],
            "createdBy": q["createdBy"],
            "access": q["access"],
            "prioritizationMode": q["prioritizationMode"],
            "defaultResourceConfigID": q["defaultResourceConfigID"],
            "defaultResourceConfig": None,
            "externalLinks": None,
            "createdAt": q["createdAt"],
            "updatedAt": q["updatedAt"],
            "entityName": q["entityName"],
            "projectName": q["projectName"],
            "runQueueItems": items,
            "runQueueItem": item,
        }

    def agent_view(self, a: dict) -> dict:
        return {
            "__typename": "LaunchAgent",
            "id": a["id"],
            "name": a["name"],
            "runQueues": list(a["runQueues"]),
            "hostname": a["hostname"],
            "agentStatus": a["agentStatus"],
            "stopPolling": a["stopPolling"],
            "heartbeatAt": a["heartbeatAt"],
            "createdAt": a["createdAt"],
            "version": a["version"],
            "agentConfig": a["agentConfig"],
        }

    def run_view(self, r: dict) -> dict:
        return {"__typename": "Run", "id": r["id"], "name": r["name"], "state": r["state"],
                "stopped": r["stopped"], "displayName": r.get("displayName") or r["name"],
                "description": r.get("description"), "config": r.get("config") or "{}",
                "sweepName": r.get("sweep"), "historyLineCount": 0,
                "project": self.project_view(r["entity"], r["project"]),
                # the rest of public-API `RunFragment` (wandb.Api().run(...), used by `wandb job create`)
                "projectId": str(abs(hash((r["entity"], r["project"]))) % 100000),  # internal (integer) id
                "tags": r.get("tags") or [], "group": r.get("group"), "jobType": r.get("jobType"),
                "commit": None, "readOnly": False, "createdAt": r.get("createdAt") or _now_iso(),
                "heartbeatAt": _now_iso(), "notes": None, "systemMetrics": "{}",
                "summaryMetrics": "{}", "historyKeys": None,
                "user": {"__typename": "User", "name": self.username, "username": self.username}}

    # ---- artifacts ------------------------------------------------------------------
    # Model: a collection ("ArtifactSequence", keyed by entity/project/name, one type) holds
    # versions (artifacts). A version is created PENDING (createArtifact), gets a manifest
    # (createArtifactManifest + PUT of the manifest JSON to its uploadUrl) and files
    # (createArtifactFiles + PUT of each file to its uploadUrl), and becomes COMMITTED with
    # commitArtifact, which also moves its aliases (and "latest") onto it. File bytes are
    # stored content-addressed by MD5 (key wandb_artifacts/<md5hex>), so a file already
    # uploaded gets uploadUrl null (the real server deduplicates the same way).
    def storage_url(self, key: str) -> str:
        return f"{self.base_url}/_fake/storage/{urllib.parse.quote(key)}"

    def sequence(self, entity: str, project: str, name: str, typ: str | None = None,
                 create: bool = False) -> dict | None:
        key = (entity, project, name)
        seq = self.sequences.get(key)
        if seq is None and create:
            seq = {"id": _gid("ArtifactSequence", self.next_id()), "name": name, "entity": entity,
                   "project": project, "type": typ, "versions": [], "createdAt": _now_iso(),
                   "description": None}
            self.sequences[key] = seq
        if seq is not None and typ is not None and seq["type"] != typ:
            raise GraphQLFieldError(
                f"artifact collection {name!r} has type {seq['type']!r}, not {typ!r}")
        return seq

    def committed_versions(self, seq: dict) -> list[dict]:
        return [a for a in (self.artifacts[i] for i in seq["versions"]) if a["state"] == "COMMITTED"]

    def latest(self, seq: dict) -> dict | None:
        c = self.committed_versions(seq)
        return c[-1] if c else None

    def resolve_version(self, seq: dict, alias: str) -> dict | None:
        """`vN` -> versionIndex N; otherwise an alias ("latest" = newest committed version)."""
        m = re.fullmatch(r"v(\d+)", alias or "")
        for a in self.committed_versions(seq):
            if m and a["versionIndex"] == int(m.group(1)):
                return a
            if not m and alias in a["aliases"]:
                return a
        if alias == "latest":
            return self.latest(seq)
        return None

    def manifest_json(self, a: dict) -> dict | None:
        mf = self.manifests.get(a.get("manifestId") or "")
        raw = self.blobs.get(mf["key"]) if mf else None
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def artifact_files(self, a: dict) -> list[dict]:
        """File nodes of an artifact, from its uploaded manifest (sorted by path)."""
        mj = self.manifest_json(a) or {}
        out = []
        for i, (path, entry) in enumerate(sorted((mj.get("contents") or {}).items())):
            digest = entry.get("digest") or ""
            try:
                hexd = base64.b64decode(digest).hex()
            except Exception:
                hexd = ""
            key = f"wandb_artifacts/{hexd}"
            out.append({"__typename": "File", "id": _gid("File", a["n"] * 100000 + i),
                        "name": path, "displayName": path.rsplit("/", 1)[-1],
                        "digest": digest, "md5": digest, "sizeBytes": entry.get("size"),
                        "mimetype": None, "storagePath": key, "updatedAt": a["updatedAt"],
                        "directUrl": self.storage_url(key) if key in self.blobs else None,
                        "url": self.storage_url(key) if key in self.blobs else None})
        return out

    def files_connection(self, a: dict, args: dict) -> dict:
        files = self.artifact_files(a)
        names = args.get("names")
        if names:
            files = [f for f in files if f["name"] in names]
        start = 0
        if args.get("after"):
            try:
                start = int(base64.b64decode(args["after"]).decode().rsplit(":", 1)[-1]) + 1
            except Exception:
                raise GraphQLFieldError(f"invalid cursor {args['after']!r}")
        first = args.get("first")
        page = files[start:start + first] if first is not None else files[start:]
        end = start + len(page)

        def cur(i: int) -> str:
            return base64.b64encode(f"File:cursor:{i}".encode()).decode()

        return {"__typename": "FileConnection", "totalCount": len(files),
                "edges": [{"__typename": "FileEdge", "cursor": cur(start + i), "node": f}
                          for i, f in enumerate(page)],
                "pageInfo": {"__typename": "PageInfo", "hasNextPage": end < len(files),
                             "endCursor": cur(end - 1) if page else None,
                             "hasPreviousPage": start > 0, "startCursor": cur(start) if page else None}}

    def project_info(self, entity: str, project: str) -> dict:
        pv = self.project_view(entity, project)
        pv["internalId"] = str(abs(hash((entity, project))) % 100000)
        return pv

    def collection_view(self, seq: dict) -> dict:
        def membership(args: dict) -> dict | None:
            a = self.resolve_version(seq, args.get("aliasName") or args.get("versionIndex") or "latest")
            return self.membership_view(a) if a else None

        def artifacts(args: dict) -> dict:
            vs = list(reversed(self.committed_versions(seq)))
            return {"__typename": "VersionedArtifactConnection", "totalCount": len(vs),
                    "edges": [{"__typename": "VersionedArtifactEdge", "cursor": a["id"],
                               "node": self.artifact_view(a)} for a in vs],
                    "pageInfo": {"__typename": "PageInfo", "hasNextPage": False, "endCursor": None}}

        def latest(_args: dict) -> dict | None:
            la = self.latest(seq)
            return self.artifact_view(la) if la else None

        return {"__typename": "ArtifactSequence", "id": seq["id"], "name": seq["name"],
                "description": seq["description"], "createdAt": seq["createdAt"],
                "project": self.project_info(seq["entity"], seq["project"]),
                "defaultArtifactType": {"__typename": "ArtifactType", "name": seq["type"]},
                "latestArtifact": latest,
                "artifactMembership": membership, "artifacts": artifacts, "tags": {
                    "__typename": "TagConnection", "edges": []}}

    def alias_views(self, a: dict, seq: dict) -> list[dict]:
        return [{"__typename": "ArtifactAlias", "id": _gid("ArtifactAlias", a["n"] * 1000 + i), "alias": al,
                 "artifactCollection": lambda _a: self.collection_view(seq),
                 "artifactCollectionName": seq["name"]}
                for i, al in enumerate(a["aliases"])]

    def artifact_view(self, a: dict) -> dict:
        seq = self.sequences[a["seq"]]
        mf = self.manifests.get(a.get("manifestId") or "")

        def current_manifest() -> dict | None:
            if not mf:
                return None
            return {"__typename": "ArtifactManifest", "id": a["manifestId"],
                    "file": {"__typename": "File", "id": _gid("File", a["n"] * 100000 + 99999),
                             "name": "wandb_manifest.json",
                             "directUrl": self.storage_url(mf["key"]), "url": self.storage_url(mf["key"])}}

        return {
            "__typename": "Artifact",
            "id": a["id"],
            "name": f"{seq['name']}:v{a['versionIndex']}",
            "versionIndex": a["versionIndex"],
            "artifactType": {"__typename": "ArtifactType", "id": _gid("ArtifactType", 1), "name": seq["type"]},
            "artifactSequence": {"__typename": "ArtifactSequence", "id": seq["id"], "name": seq["name"],
                                 "project": self.project_info(seq["entity"], seq["project"]),
                                 "latestArtifact": (lambda _a: (
                                     {"__typename": "Artifact", "id": l["id"], "versionIndex": l["versionIndex"]}
                                     if (l := self.latest(seq)) else None))},
            "description": a["description"],
            "metadata": json.dumps(a["metadata"]) if a["metadata"] is not None else None,
            "ttlDurationSeconds": -1,
            "ttlIsInherited": True,
            "tags": [],
            "historyStep": a.get("historyStep"),
            "state": a["state"],
            "size": a["size"],
            "digest": a["digest"],
            "digestAlgorithm": a["digestAlgorithm"],
            "commitHash": a["commitHash"],
            "fileCount": a["fileCount"],
            "createdAt": a["createdAt"],
            "updatedAt": a["updatedAt"],
            "aliases": self.alias_views(a, seq),
            "currentManifest": current_manifest() if mf else None,
            "files": lambda args: self.files_connection(a, args),
        }

    def membership_view(self, a: dict) -> dict:
        seq = self.sequences[a["seq"]]
        return {"__typename": "ArtifactCollectionMembership",
                "id": _gid("ArtifactCollectionMembership", a["n"]),
                "versionIndex": a["versionIndex"], "createdAt": a["createdAt"],
                "aliases": [{"__typename": "ArtifactAlias", "id": v["id"], "alias": v["alias"]}
                            for v in self.alias_views(a, seq)],
                "artifactCollection": lambda _a: self.collection_view(seq),
                "artifact": lambda _a: self.artifact_view(a),
                "files": lambda args: self.files_connection(a, args)}

    def _split_name(self, full: str | None) -> tuple[str, str]:
        name, _, alias = (full or "").partition(":")
        return name, alias or "latest"

    def membership_by_name(self, entity: str, project: str, full: str | None) -> dict | None:
        name, alias = self._split_name(full)
        seq = self.sequences.get((entity, project, name))
        a = self.resolve_version(seq, alias) if seq else None
        return self.membership_view(a) if a else None

    def artifact_by_name(self, entity: str, project: str, full: str | None) -> dict | None:
        name, alias = self._split_name(full)
        seq = self.sequences.get((entity, project, name))
        a = self.resolve_version(seq, alias) if seq else None
        return self.artifact_view(a) if a else None

    def collection_by_name(self, entity: str, project: str, name: str | None) -> dict | None:
        seq = self.sequences.get((entity, project, name))
        return self.collection_view(seq) if seq else None

    def artifact_type_view(self, entity: str, project: str, name: str | None) -> dict | None:
        seqs = [s for (e, p, _), s in self.sequences.items() if e == entity and p == project and s["type"] == name]
        if not seqs:
            return None
        return {"__typename": "ArtifactType", "id": _gid("ArtifactType", 1), "name": name,
                "artifactCollection": lambda a: self.collection_by_name(entity, project, a.get("name")),
                "artifact": lambda a: self.artifact_by_name(entity, project, a.get("name"))}

    def create_artifact(self, inp: dict) -> dict:
        entity = inp.get("entityName") or self.entity
        project = inp.get("projectName") or "uncategorized"
        names = inp.get("artifactCollectionNames") or [inp.get("artifactCollectionName")]
        if not names or not names[0]:
            raise GraphQLFieldError("createArtifact: artifactCollectionNames is required")
        typ = inp.get("artifactTypeName")
        client_id = inp.get("clientID")
        # Same clientID -> same artifact (the Python side pre-creates a version that
        # wandb-core's log_artifact then creates again).
        if client_id:
            for a in self.artifacts.values():
                if a["clientID"] == client_id:
                    return a
        seq = self.sequence(entity, project, names[0], typ, create=True)
        latest = self.latest(seq)
        if inp.get("enableDigestDeduplication") and latest is not None and latest["digest"] == inp.get("digest"):
            return latest
        n = self.next_id()
        a = {"id": _gid("Artifact", n), "n": n, "seq": (entity, project, names[0]),
             "versionIndex": len(seq["versions"]), "state": "PENDING",
             "digest": inp.get("digest"), "digestAlgorithm": inp.get("digestAlgorithm") or "MANIFEST_MD5",
             "description": inp.get("description"),
             "metadata": json.loads(inp["metadata"]) if isinstance(inp.get("metadata"), str) else inp.get("metadata"),
             "clientID": client_id, "sequenceClientID": inp.get("sequenceClientID"),
             "pendingAliases": [x.get("alias") for x in (inp.get("aliases") or []) if isinstance(x, dict)],
             "aliases": [], "runName": inp.get("runName"), "historyStep": inp.get("historyStep"),
             "size": 0, "fileCount": 0, "commitHash": None, "manifestId": None,
             "createdAt": _now_iso(), "updatedAt": _now_iso()}
        self.artifacts[a["id"]] = a
        seq["versions"].append(a["id"])
        return a

    def commit_artifact(self, a: dict) -> None:
        if a["state"] == "COMMITTED":
            return
        seq = self.sequences[a["seq"]]
        mj = self.manifest_json(a)
        if mj is None:
            raise GraphQLFieldError(f"artifact {a['id']} has no uploaded manifest")
        contents = mj.get("contents") or {}
        a["fileCount"] = len(contents)
        a["size"] = sum(int(e.get("size") or 0) for e in contents.values())
        a["state"] = "COMMITTED"
        a["commitHash"] = (a["digest"] or "")[:12] or None
        a["updatedAt"] = _now_iso()
        wanted = list(dict.fromkeys([al for al in a["pendingAliases"] if al] + ["latest"]))
        for other in (self.artifacts[i] for i in seq["versions"]):
            if other is not a:
                other["aliases"] = [al for al in other["aliases"] if al not in wanted]
        a["aliases"] = wanted

    def artifact_summary(self, a: dict) -> dict:
        e, p, n = a["seq"]
        return {"id": a["id"], "entity": e, "project": p, "collection": n,
                "type": self.sequences[a["seq"]]["type"], "versionIndex": a["versionIndex"],
                "state": a["state"], "aliases": a["aliases"], "digest": a["digest"],
                "files": [f["name"] for f in self.artifact_files(a)]}

    def project_view(self, entity: str, name: str) -> dict:
        def run_queues(_args: dict) -> list:
            qs = [q for q in self.queues.values()
                  if q["entityName"] == entity and q["projectName"] == name]
            return [self.queue_view(q) for q in qs]

        def run_queue(args: dict) -> dict | None:
            q = self.find_queue(entity, name, args.get("name"))
            return self.queue_view(q) if q else None

        def run(args: dict) -> dict | None:
            r = self.runs.get((entity, name, args.get("name")))
            return self.run_view(r) if r else None

        return {
            "__typename": "Project",
            "id": _gid("Project", abs(hash((entity, name))) % 100000),
            "name": name,
            "entityName": entity,
            "entity": {"__typename": "Entity", "id": _gid("Entity", 1), "name": entity},
            "runQueues": run_queues,
            "runQueue": run_queue,
            "run": run,
            "artifactCollectionMembership": lambda a: self.membership_by_name(entity, name, a.get("name")),
            "artifactCollection": lambda a: self.collection_by_name(entity, name, a.get("name")),
            "artifact": lambda a: self.artifact_by_name(entity, name, a.get("name")),
            "artifactType": lambda a: self.artifact_type_view(entity, name, a.get("name")),
        }


# --------------------------------------------------------------------------------------
# Resolvers: root field name -> fn(state, args, ctx) -> value
# --------------------------------------------------------------------------------------


def _need_item(st: State, item_id: Any) -> dict:
    it = st.items.get(str(item_id))
    if it is None:
        raise GraphQLFieldError(f"run queue item {item_id} not found")
    return it


def _input(args: dict) -> dict:
    inp = args.get("input")
    if not isinstance(inp, dict):
        raise GraphQLFieldError("missing required argument input")
    return inp


def q_viewer(st: State, args: dict) -> dict:
    return {
        "__typename": "User",
        "id": _gid("User", 1),
        "entity": st.entity,
        "username": st.username,
        "name": st.username,
        "email": f"{st.username}@example.invalid",
        "admin": False,
        "flags": "{}",
        "photoUrl": None,
        "userInfo": None,
        "defaultFramework": None,
        "teams": {"__typename": "EntityConnection",
                  "edges": [{"__typename": "EntityEdge",
                             "node": {"__typename": "Entity", "name": st.entity}}]},
        "organizations": [],
        "apiKeys": None,
    }


def q_project(st: State, args: dict) -> dict | None:
    entity = args.get("entityName") or st.entity
    name = args.get("name")
    if name is None:
        return None
    return st.project_view(entity, name)


def q_entity(st: State, args: dict) -> dict:
    name = args.get("name") or st.entity
    return {"__typename": "Entity", "id": _gid("Entity", 1), "name": name, "isTeam": False,
            "organization": None}


def q_launch_agent(st: State, args: dict) -> dict | None:
    a = st.agents.get(str(args.get("id")))
    return st.agent_view(a) if a else None


def q_server_info(st: State, args: dict) -> dict:
    return {"__typename": "ServerInfo",
            "cliVersionInfo": "{}",
            "latestLocalVersionInfo": None,
            "features": [],
            "availableBucketProviders": [],
            "frontendHost": "http://127.0.0.1"}


def m_create_run_queue(st: State, args: dict) -> dict:
    # CreateRunQueue(entityName, projectName, queueName, access, prioritizationMode, ...)
    inp = _input(args)
    q = st.create_queue(inp.get("entityName") or st.entity, inp.get("projectName") or LAUNCH_DEFAULT_PROJECT,
                        inp["queueName"], inp.get("access") or "PROJECT", inp.get("prioritizationMode"))
    if inp.get("defaultResourceConfigID"):
        q["defaultResourceConfigID"] = inp["defaultResourceConfigID"]
    return {"__typename": "CreateRunQueuePayload", "success": True, "queueID": q["id"],
            "clientMutationId": inp.get("clientMutationId")}


def m_push_by_name(st: State, args: dict) -> dict:
    inp = _input(args)
    q = st.find_queue(inp.get("entityName"), inp.get("projectName"), inp.get("queueName"))
    if q is None:
        raise GraphQLFieldError(
            f"run queue {inp.get('entityName')}/{inp.get('projectName')}/{inp.get('queueName')} not found")
    it = st.push(q, inp["runSpec"], inp.get("priority"), inp.get("templateVariableValues"))
    return {"__typename": "PushToRunQueueByNamePayload", "runQueueItemId": it["id"],
            "runSpec": json.dumps(it["runSpec"]), "clientMutationId": inp.get("clientMutationId")}


def m_push(st: State, args: dict) -> dict:
    inp = _input(args)
    q = st.queues.get(str(inp.get("queueID")))
    if q is None:
        raise GraphQLFieldError(f"run queue {inp.get('queueID')} not found")
    it = st.push(q, inp["runSpec"], inp.get("priority"), inp.get("templateVariableValues"))
    return {"__typename": "PushToRunQueuePayload", "runQueueItemId": it["id"],
            "clientMutationId": inp.get("clientMutationId")}


def m_pop(st: State, args: dict) -> dict | None:
    inp = _input(args)
    q = st.find_queue(inp.get("entityName"), inp.get("projectName"), inp.get("queueName"))
    if q is None:
        raise GraphQLFieldError(
            f"run queue {inp.get('entityName')}/{inp.get('projectName')}/{inp.get('queueName')} not found")
    agent_id = inp.get("launchAgentId")
    if agent_id is not None and str(agent_id) not in st.agents:
        raise GraphQLFieldError(f"launch agent {agent_id} not found")
    it = st.pop(q, agent_id)
    if it is None:
        return None
    # Default: runSpec as a JSON-encoded string (JSONString scalar). `--pop-runspec object`
    # returns it as a JSON object instead, which is what the Python agent of wandb 0.31
    # needs (it calls .get() on it; see README).
    spec = it["runSpec"] if st.pop_runspec == "object" else json.dumps(it["runSpec"])
    return {"__typename": "PopFromRunQueuePayload", "runQueueItemId": it["id"],
            "runSpec": spec, "clientMutationId": inp.get("clientMutationId")}


def m_ack(st: State, args: dict) -> dict:
    inp = _input(args)
    st.requeue_expired()
    it = _need_item(st, inp.get("runQueueItemId"))
    ok = it["state"] == "LEASED"
    if ok:
        it["state"] = "CLAIMED"
        it["associatedRunId"] = inp.get("runName")
    return {"__typename": "AckRunQueueItemPayload", "success": ok,
            "clientMutationId": inp.get("clientMutationId")}


def m_fail(st: State, args: dict) -> dict:
    inp = _input(args)
    it = _need_item(st, inp.get("runQueueItemId"))
    it["state"] = "FAILED"
    it["error"] = {"__typename": "RunQueueItemError", "message": inp.get("message"),
                   "stage": inp.get("stage"), "filePaths": inp.get("filePaths")}
    return {"__typename": "FailRunQueueItemPayload", "success": True,
            "clientMutationId": inp.get("clientMutationId")}


def m_warning(st: State, args: dict) -> dict:
    inp = _input(args)
    it = _need_item(st, inp.get("runQueueItemId"))
    it["warnings"].append({"message": inp.get("message"), "stage": inp.get("stage"),
                           "filePaths": inp.get("filePaths"), "createdAt": _now_iso()})
    return {"__typename": "UpdateRunQueueItemWarningPayload", "success": True,
            "clientMutationId": inp.get("clientMutationId")}


def m_create_agent(st: State, args: dict) -> dict:
    inp = _input(args)
    queue_ids = [str(x) for x in (inp.get("runQueues") or [])]
    for qid in queue_ids:
        if qid not in st.queues:
            raise GraphQLFieldError(f"run queue {qid} not found")
    n = st.next_id()
    aid = _gid("LaunchAgent", n)
    st.agents[aid] = {
        "id": aid,
        "name": f"launch-agent-{n:04d}",
        "entityName": inp.get("entityName"),
        "projectName": inp.get("projectName"),
        "runQueues": queue_ids,
        "hostname": inp.get("hostname"),
        "agentConfig": inp.get("agentConfig"),
        "version": inp.get("version"),
        "agentStatus": "POLLING",
        "stopPolling": False,
        "heartbeatAt": _now_iso(),
        "createdAt": _now_iso(),
    }
    return {"__typename": "CreateLaunchAgentPayload", "launchAgentId": aid,
            "success": True, "clientMutationId": inp.get("clientMutationId")}


def m_update_agent(st: State, args: dict) -> dict:
    inp = _input(args)
    a = st.agents.get(str(inp.get("launchAgentId")))
    if a is None:
        raise GraphQLFieldError(f"launch agent {inp.get('launchAgentId')} not found")
    if inp.get("agentStatus") is not None:
        a["agentStatus"] = inp["agentStatus"]
    if inp.get("agentConfig") is not None:
        a["agentConfig"] = inp["agentConfig"]
    a["heartbeatAt"] = _now_iso()
    return {"__typename": "UpdateLaunchAgentPayload", "success": True,
            "clientMutationId": inp.get("clientMutationId")}


def m_upsert_bucket(st: State, args: dict) -> dict:
    """Creates/updates a run (the Python agent calls wandb.init for its own hidden run)."""
    inp = _input(args)
    entity = inp.get("entityName") or st.entity
    project = inp.get("modelName") or "uncategorized"
    name = inp.get("name") or f"run-{st.seq + 1}"
    key = (entity, project, name)
    inserted = key not in st.runs
    r = st.runs.setdefault(key, {"id": _gid("Run", st.next_id()), "name": name, "entity": entity,
                                 "project": project, "state": "running", "stopped": False})
    for src, dst in (("displayName", "displayName"), ("description", "description"), ("config", "config"),
                     ("sweep", "sweep"), ("state", "state"), ("jobType", "jobType")):
        if inp.get(src) is not None:
            r[dst] = inp[src]
    return {"__typename": "UpsertBucketPayload", "bucket": st.run_view(r), "inserted": inserted,
            "clientMutationId": inp.get("clientMutationId")}


def m_create_run_files(st: State, args: dict) -> dict:
    """Upload URLs for run files; they point back at this fake (PUT /_fake/upload/...)."""
    inp = _input(args)
    ent, proj, run = inp.get("entityName"), inp.get("projectName"), inp.get("runName")
    r = st.runs.get((ent, proj, run))
    files = [{"__typename": "File", "name": f,
              "uploadUrl": f"{st.base_url}/_fake/upload/{urllib.parse.quote(ent or '')}/"
                           f"{urllib.parse.quote(proj or '')}/{urllib.parse.quote(run or '')}/"
                           f"{urllib.parse.quote(f, safe='')}"}
             for f in inp.get("files") or []]
    return {"__typename": "CreateRunFilesPayload", "runID": r["id"] if r else _gid("Run", 0),
            "uploadHeaders": [], "files": files, "clientMutationId": inp.get("clientMutationId")}


def m_delete_run(st: State, args: dict) -> dict:
    """DeleteRun(id) from wandb.apis.public.Run.delete (`wandb job create` deletes its hidden run)."""
    inp = _input(args)
    for key, r in list(st.runs.items()):
        if r["id"] == inp.get("id"):
            del st.runs[key]
    return {"__typename": "DeleteRunPayload", "clientMutationId": inp.get("clientMutationId")}


def m_delete_from_queue(st: State, args: dict) -> dict:
    inp = _input(args)
    ok = st.items.pop(str(inp.get("runQueueItemId")), None) is not None
    return {"__typename": "DeleteFromRunQueuePayload", "success": ok,
            "clientMutationId": inp.get("clientMutationId")}


# ---- artifacts ----------------------------------------------------------------------


def _need_artifact(st: State, artifact_id: Any) -> dict:
    a = st.artifacts.get(str(artifact_id))
    if a is None:
        raise GraphQLFieldError(f"artifact {artifact_id} not found")
    return a


def q_artifact(st: State, args: dict) -> dict | None:
    a = st.artifacts.get(str(args.get("id")))
    return st.artifact_view(a) if a else None


def m_create_artifact(st: State, args: dict) -> dict:
    inp = _input(args)
    a = st.create_artifact(inp)
    return {"__typename": "CreateArtifactPayload", "artifact": st.artifact_view(a),
            "clientMutationId": inp.get("clientMutationId")}


def _manifest_payload(st: State, mid: str, include_upload: bool = True) -> dict:
    mf = st.manifests[mid]
    return {"__typename": "CreateArtifactManifestPayload",
            "artifactManifest": {"__typename": "ArtifactManifest", "id": mid,
                                 "file": {"__typename": "File", "id": _gid("File", mf["n"]),
                                          "name": "wandb_manifest.json",
                                          "uploadUrl": st.storage_url(mf["key"]),
                                          "uploadHeaders": [],
                                          "directUrl": st.storage_url(mf["key"])}}}


def m_create_artifact_manifest(st: State, args: dict) -> dict:
    inp = _input(args)
    a = _need_artifact(st, inp.get("artifactID"))
    # wandb-core calls this twice per artifact: first with digest "" (includeUpload false),
    # then with the manifest's digest (includeUpload true); same artifact + name = same manifest.
    for mid, mf in st.manifests.items():
        if mf["artifactId"] == a["id"] and mf["name"] == inp.get("name"):
            if inp.get("digest"):
                mf["digest"] = inp["digest"]
            return _manifest_payload(st, mid)
    n = st.next_id()
    mid = _gid("ArtifactManifest", n)
    st.manifests[mid] = {"n": n, "artifactId": a["id"], "name": inp.get("name"), "key": f"wandb_manifests/{a['n']}/{n}/wandb_manifest.json",
                         "type": inp.get("type"), "digest": inp.get("digest"),
                         "baseArtifactID": inp.get("baseArtifactID")}
    a["manifestId"] = mid
    return _manifest_payload(st, mid)


def m_update_artifact_manifest(st: State, args: dict) -> dict:
    inp = _input(args)
    mid = str(inp.get("artifactManifestID"))
    if mid not in st.manifests:
        raise GraphQLFieldError(f"artifact manifest {mid} not found")
    if inp.get("digest") is not None:
        st.manifests[mid]["digest"] = inp["digest"]
    return dict(_manifest_payload(st, mid), __typename="UpdateArtifactManifestPayload")


def m_create_artifact_files(st: State, args: dict) -> dict:
    inp = _input(args)
    edges = []
    for f in inp.get("artifactFiles") or []:
        a = _need_artifact(st, f.get("artifactID"))
        try:
            hexd = base64.b64decode(f.get("md5") or "").hex()
        except Exception:
            raise GraphQLFieldError(f"invalid md5 {f.get('md5')!r}")
        key = f"wandb_artifacts/{hexd}"
        exists = key in st.blobs
        birth = st.blob_birth.setdefault(hexd, a["id"])
        edges.append({"__typename": "FileEdge", "node": {
            "__typename": "File", "id": _gid("File", st.next_id()), "name": f.get("name"),
            "storagePath": key,
            # Already stored (same MD5): no upload URL, the client skips the upload.
            "uploadUrl": None if exists else st.storage_url(key),
            "uploadHeaders": [],
            "uploadMultipartUrls": None,
            "artifact": {"__typename": "Artifact", "id": birth}}})
    return {"__typename": "CreateArtifactFilesPayload",
            "files": {"__typename": "FileConnection", "edges": edges},
            "clientMutationId": inp.get("clientMutationId")}


def m_commit_artifact(st: State, args: dict) -> dict:
    inp = _input(args)
    a = _need_artifact(st, inp.get("artifactID"))
    st.commit_artifact(a)
    return {"__typename": "CommitArtifactPayload", "artifact": st.artifact_view(a),
            "clientMutationId": inp.get("clientMutationId")}


def m_use_artifact(st: State, args: dict) -> dict:
    inp = _input(args)
    a = _need_artifact(st, inp.get("artifactID"))
    return {"__typename": "UseArtifactPayload", "artifact": st.artifact_view(a),
            "clientMutationId": inp.get("clientMutationId")}


ROOT_QUERY: dict[str, Callable] = {
    "viewer": q_viewer,
    "project": q_project,
    "entity": q_entity,
    "launchAgent": q_launch_agent,
    "serverInfo": q_server_info,
    "artifact": q_artifact,
}
ROOT_MUTATION: dict[str, Callable] = {
    "createRunQueue": m_create_run_queue,
    "pushToRunQueueByName": m_push_by_name,
    "pushToRunQueue": m_push,
    "popFromRunQueue": m_pop,
    "ackRunQueueItem": m_ack,
    "failRunQueueItem": m_fail,
    "updateRunQueueItemWarning": m_warning,
    "createLaunchAgent": m_create_agent,
    "updateLaunchAgent": m_update_agent,
    "deleteFromRunQueue": m_delete_from_queue,
    "upsertBucket": m_upsert_bucket,
    "createRunFiles": m_create_run_files,
    "createArtifact": m_create_artifact,
    "createArtifactManifest": m_create_artifact_manifest,
    "updateArtifactManifest": m_update_artifact_manifest,
    "createArtifactFiles": m_create_artifact_files,
    "commitArtifact": m_commit_artifact,
    "useArtifact": m_use_artifact,
    "deleteRun": m_delete_run,
}


# --------------------------------------------------------------------------------------
# Redaction for the event log
# --------------------------------------------------------------------------------------

_KEYLIKE = re.compile(r"api_?key", re.IGNORECASE)


def redact(v: Any, secret: str) -> Any:
    if isinstance(v, dict):
        return {k: (REDACTED if _KEYLIKE.search(k) and v[k] is not None else redact(x, secret))
                for k, x in v.items()}
    if isinstance(v, list):
        return [redact(x, secret) for x in v]
    if isinstance(v, str):
        s = v.strip()
        if s.startswith("{") and s.endswith("}"):
            try:
                obj = json.loads(s)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                return json.dumps(redact(obj, secret))
        if secret and secret in v:
            return v.replace(secret, REDACTED)
    return v


# --------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------


class Server:
    def __init__(self, opts: argparse.Namespace):
        self.opts = opts
        self.state = State(opts.ack_timeout, opts.entity, opts.username, opts.queue or [])
        self.basic_ok = "Basic " + base64.b64encode(f"api:{opts.api_key}".encode()).decode()

    def log(self, msg: str) -> None:
        sys.stderr.write(f"[wandb-fake] {msg}\n")
        sys.stderr.flush()

    def record(self, ev: dict) -> None:
        with self.state.lock:
            ev["seq"] = len(self.state.events) + 1
            ev["time"] = time.time()
            self.state.events.append(ev)

    def authorized(self, headers) -> bool:
        if self.opts.reject_all:
            return False
        auth = headers.get("Authorization", "")
        if auth == self.basic_ok:
            return True
        if auth.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                return False
            # The real client always uses the user name "api"; accept others with the right key.
            return pw == self.opts.api_key
        return False

    def execute(self, body: dict) -> tuple[dict, list[dict]]:
        """Returns (response, events)."""
        query = body.get("query") or ""
        variables = body.get("variables") or {}
        op_name = body.get("operationName")
        try:
            doc = parse_document(query)
        except GraphQLSyntaxError as e:
            ev = {"operation": op_name, "kind": None, "fields": [], "variables": variables,
                  "error": str(e)}
            return {"data": None, "errors": [{"message": str(e)}]}, [ev]
        ops = doc["ops"]
        if op_name:
            ops = [o for o in ops if o["name"] == op_name] or ops[:1]
        if not ops:
            return {"data": None, "errors": [{"message": "no operation"}]}, []
        op = ops[0]
        name = op["name"] or op_name
        # apply variable defaults
        for vname, vdef in op["vars"].items():
            if vname not in variables and vdef["default"] is not None:
                variables[vname] = _resolve_value(vdef["default"], {})
        roots = ROOT_MUTATION if op["type"] == "mutation" else ROOT_QUERY
        data: dict = {}
        errors: list[dict] = []
        fields = []
        with self.state.lock:
            for f in _flatten(op["sel"], doc["frags"], "Mutation" if op["type"] == "mutation" else "Query",
                              variables):
                fname = f["name"]
                fields.append(fname)
                if fname == "__typename":
                    data[f["alias"]] = "Mutation" if op["type"] == "mutation" else "Query"
                    continue
                resolver = roots.get(fname)
                if resolver is None:
                    msg = (f'fake W&B server: unknown {op["type"]} field "{fname}" '
                           f'(operation {name}) - not implemented')
                    self.log("UNKNOWN " + msg)
                    errors.append({"message": msg, "path": [f["alias"]],
                                   "extensions": {"code": "FAKE_NOT_IMPLEMENTED"}})
                    data[f["alias"]] = None
                    continue
                try:
                    args = {k: _resolve_value(a, variables) for k, a in f["args"].items()}
                    value = resolver(self.state, args)
                    data[f["alias"]] = project(value, f["sel"], doc["frags"], variables, [f["alias"]])
                except GraphQLFieldError as e:
                    errors.append({"message": e.message, "path": e.path or [f["alias"]]})
                    data[f["alias"]] = None
                except Exception as e:  # a bug in the fake or a bad input
                    self.log(f"resolver {fname} raised {e!r}")
                    errors.append({"message": f"{type(e).__name__}: {e}", "path": [f["alias"]]})
                    data[f["alias"]] = None
        ev = {"operation": name, "kind": op["type"], "fields": fields, "variables": variables,
              "query": query}
        if errors:
            ev["errors"] = [e["message"] for e in errors]
        resp: dict = {"data": data}
        if errors:
            resp["errors"] = errors
        return resp, [ev]


def make_handler(srv: Server):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "wandb-fake/1"
        # Each response leaves in one write: headers and body are buffered
        # and flushed together once the handler returns (handle_one_request
        # flushes wfile). With the default unbuffered writer the headers and
        # the body go out in two writes, and a kept-alive client then waits
        # ~40 ms for the body on a delayed ACK (Nagle), which would inflate
        # every latency the agent's tests and benchmarks see.
        wbufsize = 1 << 20
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            self.wfile = _CountingWriter(self.connection, srv, self.wbufsize)

        def handle_one_request(self) -> None:
            super().handle_one_request()
            self.wfile.response_done()

        def log_message(self, fmt: str, *args: Any) -> None:
            if srv.opts.verbose:
                srv.log("%s %s" % (self.address_string(), fmt % args))

        def _send(self, status: int, payload: Any, headers: dict | None = None) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _drop(self) -> bool:
            with srv.state.lock:
                by_count = srv.state.drop_next > 0
                if by_count:
                    srv.state.drop_next -= 1
            if by_count or time.time() < srv.state.drop_until:
                self._body()
                self.close_connection = True
                try:
                    import socket
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                srv.record({"operation": None, "kind": "dropped", "path": self.path})
                return True
            return False

        def do_GET(self) -> None:
            url = urllib.parse.urlparse(self.path)
            if url.path == "/_fake/events":
                with srv.state.lock:
                    self._send(200, list(srv.state.events))
                return
            if url.path == "/_fake/state":
                with srv.state.lock:
                    st = srv.state
                    self._send(200, {"queues": list(st.queues.values()),
                                     "items": [redact(i, srv.opts.api_key) for i in st.items.values()],
                                     "agents": list(st.agents.values()),
                                     "runs": list(st.runs.values()),
                                     "artifacts": [st.artifact_summary(a) for a in st.artifacts.values()]})
                return
            if url.path.startswith("/_fake/storage/") or url.path.startswith("/artifactsV2/"):
                self._storage_get(url.path)
                return
            if url.path == "/_fake/writes":
                with srv.state.lock:
                    self._send(200, list(srv.state.writes_per_response))
                return
            if url.path in ("/healthz", "/_fake/health"):
                self._send(200, {"ok": True})
                return
            self._unknown("GET")

        def _unknown(self, method: str) -> None:
            self._body()
            msg = f"fake W&B server: unknown endpoint {method} {self.path}"
            srv.log("UNKNOWN " + msg)
            srv.record({"operation": None, "kind": "http", "method": method, "path": self.path,
                        "errors": [msg]})
            self._send(404, {"errors": [{"message": msg}]})

        def _storage_get(self, path: str) -> None:
            """Object storage. /_fake/storage/<key> is a pre-signed-style URL (no auth, like
            the directUrl/uploadUrl the real server hands out); /artifactsV2/<region>/<entity>/
            <project>/<collection>/<birthArtifactID>/<md5hex>/<name> is the client's fallback
            download URL (needs auth)."""
            if path.startswith("/artifactsV2/"):
                if not srv.authorized(self.headers):
                    self._send(401, {"errors": [{"message": "user is not logged in"}]})
                    return
                hexd = urllib.parse.unquote(path.rstrip("/").split("/")[-2])
                key = f"wandb_artifacts/{hexd}"
            else:
                key = urllib.parse.unquote(path[len("/_fake/storage/"):])
            with srv.state.lock:
                data = srv.state.blobs.get(key)
            srv.record({"operation": "storage-get", "kind": "http", "method": "GET", "path": path,
                        "status": 200 if data is not None else 404,
                        "bytes": len(data) if data is not None else 0})
            if data is None:
                self._send(404, {"errors": [{"message": f"no object {key}"}]})
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            if self.path.startswith("/_fake/storage/"):
                key = urllib.parse.unquote(urllib.parse.urlparse(self.path).path[len("/_fake/storage/"):])
                data = self._body()
                m = re.fullmatch(r"wandb_artifacts/([0-9a-f]{32})", key)
                if m and __import__("hashlib").md5(data).hexdigest() != m.group(1):
                    # like a pre-signed URL bound to a Content-MD5: wrong bytes are refused
                    srv.record({"operation": "storage-put", "kind": "http", "method": "PUT",
                                "path": self.path, "bytes": len(data), "status": 400,
                                "errors": ["content MD5 does not match the storage path"]})
                    self._send(400, {"errors": [{"message": "content MD5 does not match"}]})
                    return
                with srv.state.lock:
                    srv.state.blobs[key] = data
                srv.record({"operation": "storage-put", "kind": "http", "method": "PUT",
                            "path": urllib.parse.urlparse(self.path).path, "bytes": len(data)})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.send_header("ETag", '"%s"' % __import__("hashlib").md5(data).hexdigest())
                self.end_headers()
                return
            if self.path.startswith("/_fake/upload/"):
                n = len(self._body())
                srv.record({"operation": "upload", "kind": "http", "method": "PUT",
                            "path": urllib.parse.urlparse(self.path).path, "bytes": n})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._unknown("PUT")

        def do_POST(self) -> None:
            url = urllib.parse.urlparse(self.path)
            qs = urllib.parse.parse_qs(url.query)
            parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
            if url.path in ("/graphql", "/graphql/"):
                if self._drop():
                    return
                raw = self._body()
                if not srv.authorized(self.headers):
                    srv.record({"operation": _peek_op_name(raw), "kind": "unauthorized",
                                "status": 401})
                    self._send(401, {"errors": [{"message": "user is not logged in"}]},
                               {"WWW-Authenticate": 'Basic realm="W&B"'})
                    return
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    self._send(400, {"errors": [{"message": "invalid JSON body"}]})
                    return
                batch = body if isinstance(body, list) else [body]
                outs = []
                for b in batch:
                    resp, evs = srv.execute(b)
                    for ev in evs:
                        ev["variables"] = redact(ev.get("variables"), srv.opts.api_key)
                        ev["userAgent"] = self.headers.get("User-Agent")
                        srv.record(ev)
                    outs.append(resp)
                self._send(200, outs if isinstance(body, list) else outs[0])
                return
            if parts[:1] == ["_fake"]:
                self._control(parts[1:], qs)
                return
            if len(parts) == 5 and parts[0] == "files" and parts[4] == "file_stream":
                # Run file stream (history/console/summary of a run): accepted and dropped.
                if self._drop():
                    return
                self._body()
                if not srv.authorized(self.headers):
                    self._send(401, {"errors": [{"message": "user is not logged in"}]})
                    return
                srv.record({"operation": "file_stream", "kind": "http", "path": url.path})
                self._send(200, {"exitcode": None, "limits": {}})
                return
            self._unknown("POST")

        def _control(self, parts: list[str], qs: dict) -> None:
            st = srv.state
            raw = self._body()
            proj = (qs.get("project") or [LAUNCH_DEFAULT_PROJECT])[0]
            with st.lock:
                if parts == ["reset"]:
                    st.reset()
                    self._send(200, {"ok": True})
                elif parts == ["drop-connections"]:
                    if qs.get("count"):
                        # the next N GraphQL requests, whenever they come
                        # (a test's client may take seconds to start)
                        st.drop_next = int(qs["count"][0])
                        self._send(200, {"ok": True, "count": st.drop_next})
                    else:
                        secs = float((qs.get("seconds") or ["5"])[0])
                        st.drop_until = time.time() + secs
                        self._send(200, {"ok": True, "until": st.drop_until})
                elif parts == ["shutdown"]:
                    self._send(200, {"ok": True})
                    threading.Thread(target=self.server.shutdown, daemon=True).start()
                elif len(parts) == 3 and parts[0] == "queues":
                    q = st.create_queue(parts[1], proj, parts[2])
                    self._send(200, st.queue_view(q) | {"runQueueItems": None, "runQueueItem": None})
                elif len(parts) == 4 and parts[0] == "queues" and parts[3] == "items":
                    try:
                        spec = json.loads(raw)
                    except ValueError:
                        self._send(400, {"error": "body must be a JSON runSpec"})
                        return
                    q = st.create_queue(parts[1], proj, parts[2])
                    prio = qs.get("priority")
                    it = st.push(q, spec, int(prio[0]) if prio else None)
                    self._send(200, {"runQueueItemId": it["id"], "queueId": q["id"]})
                elif len(parts) == 3 and parts[0] == "agents" and parts[2] == "stop":
                    a = st.agents.get(parts[1])
                    if a is None:
                        self._send(404, {"error": "no such agent"})
                    else:
                        a["stopPolling"] = True
                        self._send(200, {"ok": True})
                elif len(parts) == 4 and parts[0] == "runs":
                    try:
                        body = json.loads(raw or b"{}")
                    except ValueError:
                        body = {}
                    key = (parts[1], parts[2], parts[3])
                    r = st.runs.setdefault(key, {"id": _gid("Run", st.next_id()), "name": parts[3],
                                                 "entity": parts[1], "project": parts[2],
                                                 "state": "running", "stopped": False})
                    r.update({k: body[k] for k in ("state", "stopped") if k in body})
                    self._send(200, r)
                else:
                    self._send(404, {"error": f"unknown control endpoint /_fake/{'/'.join(parts)}"})

    return Handler


class _CountingWriter(io.BufferedWriter):
    """The handler's buffered writer; counts the socket writes each response
    took, for `GET /_fake/writes` (the smoke test checks that every response
    left in one write)."""

    class _Raw(io.RawIOBase):
        def __init__(self, sock) -> None:
            self.sock = sock
            self.writes = 0

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            self.writes += 1
            return self.sock.send(b)

    def __init__(self, sock, srv: "Server", size: int) -> None:
        self._counter = _CountingWriter._Raw(sock)
        super().__init__(self._counter, buffer_size=size)
        self._srv = srv

    def response_done(self) -> None:
        """Called after each request: records how many writes its response took."""
        writes, self._counter.writes = self._counter.writes, 0
        if writes:
            with self._srv.state.lock:
                self._srv.state.writes_per_response.append(writes)


def _peek_op_name(raw: bytes) -> str | None:
    try:
        body = json.loads(raw or b"{}")
        if isinstance(body, dict):
            if body.get("operationName"):
                return body["operationName"]
            m = re.search(r"\b(query|mutation)\s+(\w+)", body.get("query") or "")
            return m.group(2) if m else None
    except ValueError:
        pass
    return None


class _ThreadingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="FAKE W&B GraphQL server for launch-agent tests")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (127.x or ::1 only)")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--port-file", help="write the chosen port here once listening")
    p.add_argument("--api-key", default=os.environ.get("WANDB_FAKE_API_KEY", "f" * 40))
    p.add_argument("--reject-all", action="store_true", help="answer 401 to every GraphQL request")
    p.add_argument("--ack-timeout", type=float, default=60.0,
                   help="seconds after which a popped but un-acked item is put back")
    p.add_argument("--entity", default="fake-entity", help="the viewer's default entity")
    p.add_argument("--username", default="fake-user")
    p.add_argument("--queue", action="append",
                   help="pre-create queue [ENTITY/]NAME in project model-registry (repeatable)")
    p.add_argument("--pop-runspec", choices=("string", "object"), default="string",
                   help="encoding of popFromRunQueue.runSpec: JSON string (default) or JSON object")
    p.add_argument("-v", "--verbose", action="store_true")
    opts = p.parse_args(argv)
    if not (opts.host.startswith("127.") or opts.host in ("::1", "localhost")):
        p.error("refusing to bind a non-loopback address")
    srv = Server(opts)
    httpd = _ThreadingServer((opts.host, opts.port), make_handler(srv))
    port = httpd.server_address[1]
    srv.state.pop_runspec = opts.pop_runspec
    host = f"[{opts.host}]" if ":" in opts.host else opts.host
    srv.state.base_url = f"http://{host}:{port}"
    if opts.port_file:
        tmp = opts.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, opts.port_file)
    srv.log(f"listening on http://{opts.host}:{port} (pid {os.getpid()})")
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
