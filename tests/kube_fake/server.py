#!/usr/bin/env python3
"""A FAKE Kubernetes cluster for the tests: kube-apiserver + the Job controller + a scheduler + a kubelet.

This is not Kubernetes. It stands in for a real cluster's API endpoint (what `kubectl` and the
`kube` crate talk to at `https://<api-server>:6443`) in tests, because no Kubernetes API server can
be installed on the test machines. It speaks the real wire protocol (JSON objects, `Status`
errors, watch event streams) for the subset of the API the agent uses, and really runs pods: each
Job's pod runs as a container on the local Docker engine (`DOCKER_HOST`, else the default socket).

| part | what it does | as the real one |
|---|---|---|
| discovery | `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<group>[/<version>]` | the same documents (kubectl works against it) |
| storage | namespaces, nodes (one: `fake-node`), pods, secrets, configmaps, persistentvolumeclaims, serviceaccounts, events, jobs (batch/v1), deployments (apps/v1), poddisruptionbudgets (policy/v1), roles and rolebindings (rbac/v1); RBAC objects are stored and served, not acted on (no authorization: the token is the only check); deployments get the controller of `deployments.py` (no ReplicaSets) | `uid`, `resourceVersion` (one counter), `generateName`, `creationTimestamp`; 404 NotFound, 409 AlreadyExists / Conflict, 422 Invalid, 400 BadRequest as `Status` objects with the real messages |
| verbs | get, list (label and field selectors, `limit`/`continue`), create, update (resourceVersion conflicts), patch (merge, strategic-merge as merge, JSON patch, server-side apply as merge), delete (propagation Orphan/Background/Foreground, grace periods), deletecollection | server-side apply does no field ownership; strategic merge merges lists as a merge patch does (replaces them) |
| watch | `?watch=true` from a `resourceVersion` (or the current state as ADDED first), label/field selectors, `allowWatchBookmarks` (a BOOKMARK every `KUBE_FAKE_BOOKMARK_SECONDS`, default 5), `timeoutSeconds`; an expired resourceVersion gets the real `ERROR` event with a 410 `Expired` Status | `POST /fake/compact` expires every resourceVersion so far and ends open watches (to test 410 handling) |
| validation | every object created, replaced or applied is checked with `kubernetes_validate.validate(obj, VERSION, strict=True)` (PyPI `kubernetes-validate`) for each VERSION of `KUBE_FAKE_SCHEMA_VERSIONS` (default `1.30.0,1.33.0`: the oldest and newest supported) plus the checks the server adds (a name, a Job's restartPolicy, a container's image); a failure is a 422 | stricter than the real server, which drops unknown fields with a warning unless `fieldValidation=Strict`: the tests want every manifest right |
| Job controller | creates each Job's pods (owner references, `controller-uid`/`job-name` labels), counts succeeded/failed, `backoffLimit`, conditions `SuccessCriteriaMet`/`Complete` and `FailureTarget`/`Failed` (`BackoffLimitExceeded`), `ttlSecondsAfterFinished` | no indexed jobs, no pod failure policy, no `activeDeadlineSeconds` |
| scheduler | binds a pod to `fake-node` when its `nodeSelector` matches the node's labels, else leaves it Pending with `PodScheduled=False`, reason `Unschedulable` and the real message | affinity and tolerations are not looked at |
| kubelet | pulls the image by its `imagePullPolicy` (with the pod's `imagePullSecrets`), reporting `ErrImagePull` then `ImagePullBackOff`; env (values, `secretKeyRef`, `configMapKeyRef`, `fieldRef`, `envFrom`), volumes (secret, configMap, emptyDir, persistentVolumeClaim as host directories), `command`/`args`/`workingDir`; reports container states and pod phases, exit codes, OOM kills; stops containers on delete (SIGTERM, SIGKILL after the grace period); `pods/log` with `follow`, `tailLines`, `timestamps` | the first container of a pod only runs (init containers and sidecars are refused with a 422); resources are kept, not enforced |
| preemption | `POST /fake/evict?namespace=N&name=P` marks the pod `DisruptionTarget` (`PreemptionByScheduler`) and deletes it, as the scheduler's preemption does | |

Deployments, PodDisruptionBudgets, the pods' service-account token and their network
(`KUBE_FAKE_POD_NETWORK=host`) are in `deployments.py`. A pod whose container image is Kaniko's
executor (`gcr.io/kaniko-project/executor:*`, `KUBE_FAKE_KANIKO_IMAGES`) runs no container: the
fake executor of `kaniko.py` carries out its args with the local engine, and its output is the
pod's log.

Test hooks under `/fake/`: `GET /fake/requests` (every request: method, path, query, and the parsed
body and validation errors of writes), `GET /fake/stats`, `POST /fake/compact`, `POST /fake/evict`.

Run: `python3 server.py --port 0 --state-dir DIR [--token T]`; it prints `READY <port>` once it
listens on 127.0.0.1. SIGTERM removes every container it started.
"""

import argparse
import base64
import copy
import datetime
import json
import os
import random
import re
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import deployments  # the Deployment controller and pods' in-cluster access (this directory)
import kaniko  # the fake Kaniko executor run for executor images (this directory)

try:
    import kubernetes_validate  # type: ignore
except ImportError:  # pragma: no cover - the setup script installs it
    kubernetes_validate = None
try:
    import yaml  # type: ignore
except ImportError:  # pragma: no cover
    yaml = None

# Every manifest is validated against each of these Kubernetes versions (the
# oldest and the newest the agent supports), comma-separated.
SCHEMA_VERSIONS = [v.strip() for v in os.environ.get("KUBE_FAKE_SCHEMA_VERSIONS", "1.30.0,1.33.0").split(",") if v.strip()]
BOOKMARK_SECONDS = float(os.environ.get("KUBE_FAKE_BOOKMARK_SECONDS", "5"))
NODE_NAME = "fake-node"
NODE_LABELS = {
    "kubernetes.io/hostname": NODE_NAME,
    "kubernetes.io/os": "linux",
    "kubernetes.io/arch": "amd64",
    "node-role.kubernetes.io/worker": "",
}
INSTANCE_LABEL = "launch-agent.kube-fake"

# plural -> (group, version, kind, namespaced, short names, verbs)
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
RESOURCES = {
    "namespaces": ("", "v1", "Namespace", False, ["ns"]),
    "nodes": ("", "v1", "Node", False, ["no"]),
    "pods": ("", "v1", "Pod", True, ["po"]),
    "secrets": ("", "v1", "Secret", True, []),
    "configmaps": ("", "v1", "ConfigMap", True, ["cm"]),
    "persistentvolumeclaims": ("", "v1", "PersistentVolumeClaim", True, ["pvc"]),
    "serviceaccounts": ("", "v1", "ServiceAccount", True, ["sa"]),
    "events": ("", "v1", "Event", True, ["ev"]),
    "jobs": ("batch", "v1", "Job", True, []),
    "deployments": ("apps", "v1", "Deployment", True, ["deploy"]),
    "roles": ("rbac.authorization.k8s.io", "v1", "Role", True, []),
    "rolebindings": ("rbac.authorization.k8s.io", "v1", "RoleBinding", True, []),
}
SUBRESOURCES = {"pods": ["log", "status", "eviction"], "jobs": ["status"], "deployments": ["status"], "namespaces": ["status"]}
deployments.register(RESOURCES, SUBRESOURCES)


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_version(plural):
    group, version = RESOURCES[plural][0], RESOURCES[plural][1]
    return f"{group}/{version}" if group else version


def qualified(plural):
    group = RESOURCES[plural][0]
    return f"{plural}.{group}" if group else plural


def status(code, reason, message, details=None):
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code = code
        self.body = status(code, reason, message, details)


def not_found(plural, name):
    return ApiError(404, "NotFound", f'{qualified(plural)} "{name}" not found',
                    {"name": name, "group": RESOURCES[plural][0], "kind": plural})


def invalid(plural, name, causes):
    kind = RESOURCES[plural][2]
    group = RESOURCES[plural][0]
    shown = f"{kind}.{group}" if group else kind
    message = f'{shown} "{name}" is invalid: ' + ", ".join(f"{c['field']}: {c['message']}" for c in causes)
    details = {"name": name, "group": group, "kind": kind,
               "causes": [{"reason": c.get("reason", "FieldValueInvalid"), "message": c["message"], "field": c["field"]} for c in causes]}
    return ApiError(422, "Invalid", message, details)


# ---------------------------------------------------------------------------------------------
# selectors


def split_top(text):
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text):
    """A list of predicates over a labels dict; raises ApiError 400 on a bad selector."""
    preds = []
    for term in split_top(text or ""):
        m = re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", term)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                preds.append(lambda l, k=key, vs=values: k in l and l[k] in vs)
            else:
                preds.append(lambda l, k=key, vs=values: k not in l or l[k] not in vs)
            continue
        m = re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)", term)
        if m:
            key, op, value = m.groups()
            if op == "!=":
                preds.append(lambda l, k=key, v=value: l.get(k) != v)
            else:
                preds.append(lambda l, k=key, v=value: k in l and l[k] == v)
            continue
        m = re.fullmatch(r"!\s*([\w./-]+)", term)
        if m:
            preds.append(lambda l, k=m.group(1): k not in l)
            continue
        m = re.fullmatch(r"[\w./-]+", term)
        if m:
            preds.append(lambda l, k=term: k in l)
            continue
        raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}: invalid label selector")
    return preds


def field_value(obj, path):
    value = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(text):
    preds = []
    for term in split_top(text or ""):
        m = re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(.*)", term)
        if not m:
            raise ApiError(400, "BadRequest", f'invalid selector: "{text}"; can\'t understand "{term}"')
        path, op, value = m.groups()
        if op == "!=":
            preds.append(lambda o, p=path, v=value: field_value(o, p) != v)
        else:
            preds.append(lambda o, p=path, v=value: field_value(o, p) == v)
    return preds


def matches(obj, label_preds, field_preds):
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(p(labels) for p in label_preds) and all(p(obj) for p in field_preds)


# ---------------------------------------------------------------------------------------------
# patches


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target, ops):
    doc = copy.deepcopy(target)

    def walk(path):
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        return parent, parts[-1]

    for op in ops:
        parent, key = walk(op["path"])
        kind = op["op"]
        if isinstance(parent, list):
            index = len(parent) if key == "-" else int(key)
            if kind == "add":
                parent.insert(index, op["value"])
            elif kind == "remove":
                parent.pop(index)
            elif kind == "replace":
                parent[index] = op["value"]
            elif kind == "test" and parent[index] != op["value"]:
                raise ApiError(422, "Invalid", f"testing value {op['path']} failed")
        else:
            if kind in ("add", "replace"):
                if kind == "replace" and key not in parent:
                    raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: replace operation does not apply: doc is missing key: {op['path']}")
                parent[key] = op["value"]
            elif kind == "remove":
                if key not in parent:
                    raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: remove operation does not apply: doc is missing path: {op['path']}")
                del parent[key]
            elif kind == "test" and parent.get(key) != op["value"]:
                raise ApiError(422, "Invalid", f"testing value {op['path']} failed")
    return doc


# ---------------------------------------------------------------------------------------------
# the docker engine


def docker(*args, env=None, check=True, timeout=300):
    result = subprocess.run(["docker", *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or result.stdout.strip())
    return result


# ---------------------------------------------------------------------------------------------
# the cluster


class Cluster:
    def __init__(self, state_dir, token):
        self.state_dir = state_dir
        self.token = token
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.objects = {}  # (plural, namespace, name) -> obj
        self.rv = 100
        self.history = []  # (rv, plural, type, obj, previous)
        self.floor = 0  # resourceVersions at or below this are expired
        self.watch_epoch = 0
        self.requests = []
        self.kubelets = {}  # pod uid -> Kubelet
        self.pod_ends = {}  # job uid -> {pod uid: phase}, as the kubelets report them
        self.instance = str(os.getpid())
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create("namespaces", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, internal=True)
        self.create("nodes", None, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_NAME, "labels": dict(NODE_LABELS)},
                                    "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                                               "nodeInfo": {"kubeletVersion": "v1.33.0-fake", "containerRuntimeVersion": "docker://fake"}}}, internal=True)

    # -- storage -----------------------------------------------------------------------------

    def next_rv(self):
        self.rv += 1
        return str(self.rv)

    def record(self, plural, kind, obj, previous):
        self.history.append((self.rv, plural, kind, copy.deepcopy(obj), copy.deepcopy(previous)))
        if len(self.history) > 20000:
            dropped = self.history[:5000]
            self.history = self.history[5000:]
            self.floor = max(self.floor, dropped[-1][0])
        self.changed.notify_all()

    def get(self, plural, namespace, name):
        with self.lock:
            obj = self.objects.get((plural, namespace, name))
            if obj is None:
                raise not_found(plural, name)
            return copy.deepcopy(obj)

    def list(self, plural, namespace, label_preds, field_preds):
        with self.lock:
            items = [copy.deepcopy(o) for (p, ns, _), o in sorted(self.objects.items(), key=lambda kv: int(kv[1]["metadata"]["resourceVersion"]))
                     if p == plural and (namespace is None or ns == namespace) and matches(o, label_preds, field_preds)]
            return items, str(self.rv)

    def validate(self, plural, obj):
        """The server's checks: kubernetes-validate (strict) and the ones it adds. Raises 422."""
        meta = obj.get("metadata") or {}
        name = meta.get("name") or meta.get("generateName") or ""
        causes = []
        for version in SCHEMA_VERSIONS if kubernetes_validate is not None else []:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except Exception as error:  # ValidationError, InvalidSchemaError, ...
                path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in getattr(error, "path", []) or []).lstrip(".")
                causes.append({"field": path or "<root>", "message": f"kubernetes-validate --strict (Kubernetes {version}): {getattr(error, 'message', str(error))}", "reason": "FieldValueInvalid"})
                break
        if not meta.get("name") and not meta.get("generateName"):
            causes.append({"field": "metadata.name", "message": "Required value: name or generateName is required", "reason": "FieldValueRequired"})
        pod_spec, at = None, ""
        if plural == "pods":
            pod_spec, at = obj.get("spec") or {}, "spec"
        elif plural in ("jobs", "deployments"):
            pod_spec, at = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}, "spec.template.spec"
        if pod_spec is not None:
            containers = pod_spec.get("containers") or []
            if not containers:
                causes.append({"field": f"{at}.containers", "message": "Required value", "reason": "FieldValueRequired"})
            for i, c in enumerate(containers):
                if not c.get("name"):
                    causes.append({"field": f"{at}.containers[{i}].name", "message": "Required value", "reason": "FieldValueRequired"})
                if not c.get("image"):
                    causes.append({"field": f"{at}.containers[{i}].image", "message": "Required value", "reason": "FieldValueRequired"})
            if plural == "jobs" and pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
                causes.append({"field": f"{at}.restartPolicy", "message": f'Unsupported value: "{pod_spec.get("restartPolicy", "Always")}": supported values: "OnFailure", "Never"', "reason": "FieldValueNotSupported"})
            if pod_spec.get("initContainers"):
                causes.append({"field": f"{at}.initContainers", "message": "Forbidden: the fake cluster runs no init containers", "reason": "FieldValueForbidden"})
        if causes:
            raise invalid(plural, name, causes)

    def create(self, plural, namespace, obj, internal=False):
        with self.lock:
            if not isinstance(obj, dict):
                raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
            group, version, kind, namespaced, _ = RESOURCES[plural]
            obj.setdefault("apiVersion", api_version(plural))
            obj.setdefault("kind", kind)
            if obj.get("kind") != kind:
                raise ApiError(400, "BadRequest", f"the API version in the data ({obj.get('apiVersion')}) does not match the expected API version ({api_version(plural)})")
            meta = obj.setdefault("metadata", {})
            if namespaced:
                if meta.get("namespace") and meta["namespace"] != namespace:
                    raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
                meta["namespace"] = namespace
                if ("namespaces", None, namespace) not in self.objects:
                    raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"})
                ns_obj = self.objects[("namespaces", None, namespace)]
                if ns_obj["metadata"].get("deletionTimestamp"):
                    raise ApiError(403, "Forbidden", f'{plural} "{meta.get("name", "")}" is forbidden: unable to create new content in namespace {namespace} because it is being terminated')
            if not internal:
                self.validate(plural, obj)
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise invalid(plural, "", [{"field": "metadata.name", "message": "Required value: name or generateName is required"}])
                meta["name"] = meta["generateName"] + "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
            name = meta["name"]
            if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) or len(name) > 253:
                raise invalid(plural, name, [{"field": "metadata.name", "message": f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \'-\' or \'.\', and must start and end with an alphanumeric character'}])
            if plural in ("jobs", "namespaces") and len(name) > 63:
                raise invalid(plural, name, [{"field": "metadata.name", "message": f'Invalid value: "{name}": must be no more than 63 characters'}])
            key = (plural, namespace if namespaced else None, name)
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{qualified(plural)} "{name}" already exists',
                               {"name": name, "group": group, "kind": plural})
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            meta["generation"] = 1
            for drop in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(drop, None)
            self.defaults(plural, obj)
            meta["resourceVersion"] = self.next_rv()
            self.objects[key] = obj
            self.record(plural, "ADDED", obj, None)
            created = copy.deepcopy(obj)
        self.after_create(plural, created)
        return created

    def defaults(self, plural, obj):
        spec = obj.setdefault("spec", {}) if plural in ("pods", "jobs", "deployments", "persistentvolumeclaims") else None
        if plural == "namespaces":
            obj["status"] = {"phase": "Active"}
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif plural == "secrets":
            obj.setdefault("type", "Opaque")
            string_data = obj.pop("stringData", None) or {}
            data = obj.setdefault("data", {})
            for k, v in string_data.items():
                data[k] = base64.b64encode(v.encode()).decode()
        elif plural == "pods":
            pod_defaults(spec)
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif plural == "jobs":
            uid = obj["metadata"]["uid"]
            spec.setdefault("parallelism", 1)
            spec.setdefault("completions", 1)
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completionMode", "NonIndexed")
            spec.setdefault("suspend", False)
            spec.setdefault("manualSelector", None)
            if spec.get("manualSelector") is None:
                spec.pop("manualSelector")
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            template = spec.setdefault("template", {})
            labels = template.setdefault("metadata", {}).setdefault("labels", {})
            labels.update({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": obj["metadata"]["name"],
                           "controller-uid": uid, "job-name": obj["metadata"]["name"]})
            pod_defaults(template.setdefault("spec", {}))
            obj["status"] = {}
        elif plural == "persistentvolumeclaims":
            obj["status"] = {"phase": "Bound", "accessModes": spec.get("accessModes", ["ReadWriteOnce"])}
            spec.setdefault("volumeMode", "Filesystem")
        elif plural == "deployments":
            spec.setdefault("replicas", 1)
            obj["status"] = {"observedGeneration": 1}

    def after_create(self, plural, obj):
        meta = obj["metadata"]
        if plural == "namespaces":
            try:
                self.create("serviceaccounts", meta["name"], {"metadata": {"name": "default"}}, internal=True)
            except ApiError:
                pass
        elif plural == "jobs":
            threading.Thread(target=self.job_controller, args=(meta["namespace"], meta["name"], meta["uid"]), daemon=True).start()
        elif plural in ("deployments", "poddisruptionbudgets"):
            deployments.after_create(self, plural, obj)
        elif plural == "pods":
            kubelet = Kubelet(self, meta["namespace"], meta["name"], meta["uid"])
            with self.lock:
                self.kubelets[meta["uid"]] = kubelet
            threading.Thread(target=kubelet.run, daemon=True).start()

    def replace(self, plural, namespace, name, obj, subresource=None, validate=True):
        with self.lock:
            key = (plural, namespace if RESOURCES[plural][3] else None, name)
            current = self.objects.get(key)
            if current is None:
                raise not_found(plural, name)
            meta = obj.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
            wanted_rv = meta.get("resourceVersion")
            if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {qualified(plural)} "{name}": the object has been modified; please apply your changes to the latest version and try again',
                               {"name": name, "group": RESOURCES[plural][0], "kind": plural})
            new = copy.deepcopy(obj)
            new.setdefault("apiVersion", current["apiVersion"])
            new.setdefault("kind", current["kind"])
            if subresource == "status":
                merged = copy.deepcopy(current)
                merged["status"] = new.get("status", {})
                new = merged
            elif plural not in ("secrets", "configmaps", "serviceaccounts", "roles", "rolebindings", "namespaces", "nodes"):
                new["status"] = current.get("status", {})
            for keep in ("uid", "creationTimestamp", "namespace", "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences"):
                if keep in current["metadata"] and (keep != "ownerReferences" or "ownerReferences" not in new["metadata"]):
                    new["metadata"][keep] = current["metadata"][keep]
            new["metadata"]["name"] = name
            if validate and subresource is None:
                self.validate(plural, new)
            if plural == "secrets" and "stringData" in new:
                for k, v in (new.pop("stringData") or {}).items():
                    new.setdefault("data", {})[k] = base64.b64encode(v.encode()).decode()
            if subresource is None and json.dumps(new.get("spec"), sort_keys=True) != json.dumps(current.get("spec"), sort_keys=True):
                new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            else:
                new["metadata"]["generation"] = current["metadata"].get("generation", 1)
            if json.dumps({k: v for k, v in new.items() if k != "metadata"}, sort_keys=True) == json.dumps({k: v for k, v in current.items() if k != "metadata"}, sort_keys=True) and \
                    json.dumps({k: v for k, v in new["metadata"].items() if k != "resourceVersion"}, sort_keys=True) == json.dumps({k: v for k, v in current["metadata"].items() if k != "resourceVersion"}, sort_keys=True):
                return copy.deepcopy(current)  # no-op: no new resourceVersion, no event
            new["metadata"]["resourceVersion"] = self.next_rv()
            self.objects[key] = new
            self.record(plural, "MODIFIED", new, current)
            return copy.deepcopy(new)

    def update_internal(self, plural, namespace, name, mutate):
        """Changes an object as a controller does (no validation); None when it is gone."""
        with self.lock:
            key = (plural, namespace, name)
            current = self.objects.get(key)
            if current is None:
                return None
            new = copy.deepcopy(current)
            mutate(new)
            if new == current:
                return current
            new["metadata"]["resourceVersion"] = self.next_rv()
            self.objects[key] = new
            self.record(plural, "MODIFIED", new, current)
            return copy.deepcopy(new)

    def remove(self, plural, namespace, name):
        """Removes an object for good (a DELETED event)."""
        with self.lock:
            key = (plural, namespace, name)
            current = self.objects.pop(key, None)
            if current is None:
                return None
            gone = copy.deepcopy(current)
            gone["metadata"]["resourceVersion"] = self.next_rv()
            self.record(plural, "DELETED", gone, current)
        if plural == "pods":
            kubelet = self.kubelets.pop(current["metadata"]["uid"], None)
            if kubelet:
                kubelet.removed()
        if plural == "namespaces":
            for (p, ns, n) in list(self.objects):
                if ns == name:
                    self.delete(p, ns, n, {"propagationPolicy": "Background", "gracePeriodSeconds": 0})
        return gone

    def delete(self, plural, namespace, name, options):
        propagation = options.get("propagationPolicy")
        grace = options.get("gracePeriodSeconds")
        with self.lock:
            key = (plural, namespace if RESOURCES[plural][3] else None, name)
            current = self.objects.get(key)
            if current is None:
                raise not_found(plural, name)
            namespace = key[1]
            if plural == "pods":
                if grace is None:
                    grace = current["spec"].get("terminationGracePeriodSeconds", 30)
                kubelet = self.kubelets.get(current["metadata"]["uid"])
                if kubelet is None or not kubelet.has_container() or grace == 0 and kubelet.finished:
                    if kubelet is not None and kubelet.has_container():
                        kubelet.kill_now()
                    return self.remove(plural, namespace, name)
                if current["metadata"].get("deletionTimestamp"):
                    return copy.deepcopy(current)

                def mark(o):
                    o["metadata"]["deletionTimestamp"] = now()
                    o["metadata"]["deletionGracePeriodSeconds"] = grace
                marked = self.update_internal(plural, namespace, name, mark)
                threading.Thread(target=kubelet.terminate, args=(grace,), daemon=True).start()
                return marked
            if plural == "jobs":
                pods = [(ns, n) for (p, ns, n), o in self.objects.items() if p == "pods" and ns == namespace
                        and any(r.get("uid") == current["metadata"]["uid"] for r in o["metadata"].get("ownerReferences", []))]
                policy = propagation or "Orphan"  # batch/v1 Jobs default to orphaning their pods
                if policy == "Orphan":
                    for ns, n in pods:
                        self.update_internal("pods", ns, n, lambda o: o["metadata"].pop("ownerReferences", None))
                    return self.remove(plural, namespace, name)
                if policy == "Background":
                    gone = self.remove(plural, namespace, name)
                    for ns, n in pods:
                        threading.Thread(target=self.delete_quietly, args=("pods", ns, n, {"gracePeriodSeconds": grace}), daemon=True).start()
                    return gone
                if policy != "Foreground":
                    raise ApiError(400, "BadRequest", f'propagationPolicy: Unsupported value: "{policy}"')
                if not pods:
                    return self.remove(plural, namespace, name)

                def mark(o):
                    o["metadata"].setdefault("deletionTimestamp", now())
                    o["metadata"]["deletionGracePeriodSeconds"] = 0
                    finalizers = o["metadata"].setdefault("finalizers", [])
                    if "foregroundDeletion" not in finalizers:
                        finalizers.append("foregroundDeletion")
                marked = self.update_internal(plural, namespace, name, mark)
                for ns, n in pods:
                    threading.Thread(target=self.delete_quietly, args=("pods", ns, n, {"gracePeriodSeconds": grace}), daemon=True).start()
                threading.Thread(target=self.finish_foreground, args=(namespace, name, current["metadata"]["uid"]), daemon=True).start()
                return marked
            if plural == "namespaces":
                def terminating(o):
                    o["metadata"]["deletionTimestamp"] = now()
                    o["status"] = {"phase": "Terminating"}
                marked = self.update_internal(plural, None, name, terminating)
                threading.Thread(target=lambda: self.remove("namespaces", None, name), daemon=True).start()
                return marked
            return self.remove(plural, namespace, name)

    def delete_quietly(self, plural, namespace, name, options):
        try:
            self.delete(plural, namespace, name, options)
        except ApiError:
            pass

    def finish_foreground(self, namespace, name, uid):
        while True:
            with self.lock:
                job = self.objects.get(("jobs", namespace, name))
                if job is None or job["metadata"]["uid"] != uid:
                    return
                left = [o for (p, ns, _), o in self.objects.items() if p == "pods" and ns == namespace
                        and any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences", []))]
                if not left:
                    self.remove("jobs", namespace, name)
                    return
                self.changed.wait(1)

    # -- the Job controller ------------------------------------------------------------------

    def job_controller(self, namespace, name, uid):
        created = 0
        # Pods that ended, by uid: a pod deleted after it ended still counts
        # (the real controller tracks them with a finalizer).
        ended = self.pod_ends.setdefault(uid, {})
        # Pods of this Job seen so far: one that is gone without an end the
        # kubelet reported (deleted before its container's end was written)
        # counts as failed, as the real controller's finalizer counts it.
        seen = set()
        while True:
            with self.lock:
                job = self.objects.get(("jobs", namespace, name))
                if job is None or job["metadata"]["uid"] != uid:
                    return
                if job["metadata"].get("deletionTimestamp"):
                    return
                spec, st = job["spec"], job.get("status") or {}
                pods = [o for (p, ns, _), o in self.objects.items() if p == "pods" and ns == namespace
                        and any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences", []))]
                for p in pods:
                    seen.add(p["metadata"]["uid"])
                    if p["status"].get("phase") in ("Succeeded", "Failed"):
                        ended[p["metadata"]["uid"]] = p["status"]["phase"]
                for gone in seen - {p["metadata"]["uid"] for p in pods} - set(ended):
                    ended[gone] = "Failed"
                active = [p for p in pods if p["status"].get("phase") not in ("Succeeded", "Failed")]
                succeeded = sum(1 for phase in ended.values() if phase == "Succeeded")
                failed = sum(1 for phase in ended.values() if phase == "Failed")
                finished = any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in st.get("conditions", []))
                if finished:
                    break
                if spec.get("suspend"):
                    self.changed.wait(1)
                    continue
                conditions = []
                done = None
                if succeeded >= spec.get("completions", 1):
                    t = now()
                    conditions = [{"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": t, "lastTransitionTime": t},
                                  {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": t, "lastTransitionTime": t}]
                    done = "complete"
                elif failed > spec.get("backoffLimit", 6):
                    t = now()
                    conditions = [{"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": t, "lastTransitionTime": t},
                                  {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": t, "lastTransitionTime": t}]
                    done = "failed"
                want_pod = done is None and not active and created < spec.get("backoffLimit", 6) + 1 + succeeded

                def set_status(o, active=active, succeeded=succeeded, failed=failed, conditions=conditions, done=done):
                    s = o.setdefault("status", {})
                    s.setdefault("startTime", now())
                    s["active"] = len(active) if not done else 0
                    s["ready"] = sum(1 for p in active if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])))
                    s["terminating"] = sum(1 for p in active if p["metadata"].get("deletionTimestamp"))
                    if succeeded:
                        s["succeeded"] = succeeded
                    if failed:
                        s["failed"] = failed
                    if s.get("active") == 0:
                        s.pop("active")
                    if done:
                        s["conditions"] = conditions
                        if done == "complete":
                            s["completionTime"] = now()
                    s["uncountedTerminatedPods"] = {}
                self.update_internal("jobs", namespace, name, set_status)
                if done:
                    ttl = spec.get("ttlSecondsAfterFinished")
                    break
                if want_pod:
                    created += 1
                    template = copy.deepcopy(spec["template"])
                    pod = {"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"generateName": f"{name}-", "namespace": namespace,
                                        "labels": template.get("metadata", {}).get("labels", {}),
                                        "annotations": template.get("metadata", {}).get("annotations", {}),
                                        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": True, "blockOwnerDeletion": True}]},
                           "spec": template.get("spec", {})}
                    if not pod["metadata"]["annotations"]:
                        del pod["metadata"]["annotations"]
                    try:
                        self.create("pods", namespace, pod, internal=True)
                    except ApiError as error:
                        print(f"job controller: cannot create a pod for {namespace}/{name}: {error}", file=sys.stderr)
                self.changed.wait(1)
        with self.lock:
            job = self.objects.get(("jobs", namespace, name))
            ttl = job and job["spec"].get("ttlSecondsAfterFinished")
        if ttl is not None:
            time.sleep(ttl)
            with self.lock:
                job = self.objects.get(("jobs", namespace, name))
                if job is None or job["metadata"]["uid"] != uid:
                    return
            try:
                self.delete("jobs", namespace, name, {"propagationPolicy": "Background"})
            except ApiError:
                pass


def pod_defaults(spec):
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for c in spec.get("containers", []) or []:
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
        image = c.get("image", "")
        tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
        latest = not tagged or image.endswith(":latest")
        c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")


# ---------------------------------------------------------------------------------------------
# the kubelet


class Kubelet:
    """Runs one pod's first container on the Docker engine and reports its status."""

    def __init__(self, cluster, namespace, name, uid):
        self.cluster = cluster
        self.namespace, self.name, self.uid = namespace, name, uid
        self.container_id = None
        self.finished = False
        self.gone = threading.Event()
        self.terminating = threading.Event()
        self.lock = threading.Lock()
        self.dir = os.path.join(cluster.state_dir, "pods", uid)
        self.executor = None  # a Kaniko executor pod's fake executor (kaniko.py)
        self.log_path = None  # where that executor's log (the pod's) is written

    def has_container(self):
        return self.container_id is not None

    def pod(self):
        with self.cluster.lock:
            obj = self.cluster.objects.get(("pods", self.namespace, self.name))
            return copy.deepcopy(obj) if obj and obj["metadata"]["uid"] == self.uid else None

    def set_status(self, mutate):
        def guarded(o):
            if o["metadata"]["uid"] == self.uid:
                mutate(o.setdefault("status", {}))
        return self.cluster.update_internal("pods", self.namespace, self.name, guarded)

    def condition(self, s, kind, value, reason=None, message=None):
        conditions = s.setdefault("conditions", [])
        for c in conditions:
            if c["type"] == kind:
                if c["status"] != value:
                    c["lastTransitionTime"] = now()
                c["status"] = value
                c.pop("reason", None)
                c.pop("message", None)
                break
        else:
            c = {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": now()}
            conditions.append(c)
        if reason:
            c["reason"] = reason
        if message:
            c["message"] = message

    def waiting(self, container, reason, message=None):
        def mutate(s):
            state = {"waiting": {"reason": reason}}
            if message:
                state["waiting"]["message"] = message
            s["containerStatuses"] = [{"name": container["name"], "image": container["image"], "imageID": "", "ready": False,
                                       "restartCount": 0, "started": False, "state": state, "lastState": {}}]
            self.condition(s, "ContainersReady", "False", "ContainersNotReady", f"containers with unready status: [{container['name']}]")
            self.condition(s, "Ready", "False", "ContainersNotReady", f"containers with unready status: [{container['name']}]")
        self.set_status(mutate)

    def run(self):
        try:
            self._run()
        except Exception as error:  # a bug of the fake: say so on the pod, never hang silently
            print(f"kubelet: pod {self.namespace}/{self.name}: {error!r}", file=sys.stderr)
            self.set_status(lambda s: s.update({"phase": "Failed", "reason": "FakeKubeletError", "message": str(error)}))

    def _run(self):
        pod = self.pod()
        if pod is None:
            return
        spec = pod["spec"]
        # the scheduler
        selector = spec.get("nodeSelector") or {}
        if spec.get("nodeName") not in (None, NODE_NAME) or any(NODE_LABELS.get(k) != v for k, v in selector.items()):
            message = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
            self.set_status(lambda s: self.condition(s, "PodScheduled", "False", "Unschedulable", message))
            self.cluster.event(pod, "Warning", "FailedScheduling", message, "default-scheduler")
            self.gone.wait()
            return
        for claim in [v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", []) or [] if "persistentVolumeClaim" in v]:
            with self.cluster.lock:
                missing = ("persistentvolumeclaims", self.namespace, claim) not in self.cluster.objects
            if missing:
                message = f'0/1 nodes are available: persistentvolumeclaim "{claim}" not found. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.'
                self.set_status(lambda s: self.condition(s, "PodScheduled", "False", "Unschedulable", message))
                if self.gone.wait(1):
                    return
                return self._run()

        def bind(o):
            o["spec"]["nodeName"] = NODE_NAME
            s = o.setdefault("status", {})
            self.condition(s, "PodScheduled", "True")
        self.cluster.update_internal("pods", self.namespace, self.name, bind)
        self.set_status(lambda s: (self.condition(s, "Initialized", "True"), s.update({"hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "startTime": now()})))
        container = spec["containers"][0]
        self.waiting(container, "ContainerCreating")
        executor = kaniko.is_executor(container.get("image", ""))
        # the image (the fake executor needs none)
        backoff = 5
        while not executor and not self.terminating.is_set():
            error = self.ensure_image(container, spec, pod)
            if error is None:
                break
            self.waiting(container, "ErrImagePull", error)
            self.cluster.event(pod, "Warning", "Failed", f"Failed to pull image \"{container['image']}\": {error}", "kubelet")
            if self.terminating.wait(1):
                break
            self.waiting(container, "ImagePullBackOff", f'Back-off pulling image "{container["image"]}": {error}')
            if self.terminating.wait(backoff):
                break
            backoff = min(backoff * 2, 60)
        if self.terminating.is_set():
            self.finish_without_container(container)
            return
        # env and volumes
        while not self.terminating.is_set():
            try:
                env = self.environment(container, pod)
                mounts = self.volumes(container, spec)
                break
            except KeyError as missing:
                self.waiting(container, "CreateContainerConfigError", str(missing.args[0]))
                if self.terminating.wait(2):
                    break
        if self.terminating.is_set():
            self.finish_without_container(container)
            return
        if executor:
            self.run_executor(container, env, mounts)
            return
        restarts = 0
        while True:
            code, oom, started, finished = self.run_container(container, env, mounts, pod, restarts)
            if code is None:
                return
            policy = spec.get("restartPolicy", "Always")
            if self.terminating.is_set() or policy == "Never" or (policy == "OnFailure" and code == 0):
                self.terminated(container, code, oom, started, finished, restarts)
                return
            restarts += 1
            time.sleep(min(10, 2 ** restarts))

    def ensure_image(self, container, spec, pod):
        image = container["image"]
        policy = container.get("imagePullPolicy", "IfNotPresent")
        present = docker("image", "inspect", image, check=False).returncode == 0
        if policy == "Never":
            return None if present else f'Container image "{image}" is not present with pull policy of Never'
        if present and policy == "IfNotPresent":
            return None
        with tempfile.TemporaryDirectory() as config_dir:
            auths = {}
            for ref in spec.get("imagePullSecrets", []) or []:
                with self.cluster.lock:
                    secret = self.cluster.objects.get(("secrets", self.namespace, ref.get("name")))
                if secret and ".dockerconfigjson" in secret.get("data", {}):
                    auths.update(json.loads(base64.b64decode(secret["data"][".dockerconfigjson"])).get("auths", {}))
            with open(os.path.join(config_dir, "config.json"), "w") as f:
                json.dump({"auths": auths}, f)
            env = dict(os.environ, DOCKER_CONFIG=config_dir)
            result = docker("pull", "-q", image, env=env, check=False)
        if result.returncode != 0:
            return f"rpc error: code = Unknown desc = failed to pull and unpack image \"{image}\": {result.stderr.strip()}"
        return None

    def environment(self, container, pod):
        env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "443", "HOSTNAME": self.name}

        def lookup(plural, ref, key, optional):
            with self.cluster.lock:
                obj = self.cluster.objects.get((plural, self.namespace, ref))
            kind = "secret" if plural == "secrets" else "configmap"
            if obj is None:
                if optional:
                    return None
                raise KeyError(f'{kind} "{ref}" not found')
            data = obj.get("data", {}) or {}
            if key not in data:
                if optional:
                    return None
                raise KeyError(f"couldn't find key {key} in {'Secret' if plural == 'secrets' else 'ConfigMap'} {self.namespace}/{ref}")
            return base64.b64decode(data[key]).decode() if plural == "secrets" else data[key]

        for source in container.get("envFrom", []) or []:
            prefix = source.get("prefix", "")
            for plural, field in (("secrets", "secretRef"), ("configmaps", "configMapRef")):
                if field in source:
                    ref = source[field]
                    with self.cluster.lock:
                        obj = self.cluster.objects.get((plural, self.namespace, ref["name"]))
                    if obj is None:
                        if ref.get("optional"):
                            continue
                        raise KeyError(f'{"secret" if plural == "secrets" else "configmap"} "{ref["name"]}" not found')
                    for k, v in (obj.get("data", {}) or {}).items():
                        env[prefix + k] = base64.b64decode(v).decode() if plural == "secrets" else v
        for item in container.get("env", []) or []:
            if "value" in item or "valueFrom" not in item:
                env[item["name"]] = item.get("value", "")
                continue
            source = item["valueFrom"]
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                value = lookup("secrets", ref["name"], ref["key"], ref.get("optional"))
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                value = lookup("configmaps", ref["name"], ref["key"], ref.get("optional"))
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                current = self.pod() or pod
                m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
                if m:
                    value = (current["metadata"].get(m.group(1)) or {}).get(m.group(2), "")
                else:
                    value = field_value(current, path)
            else:
                value = ""
            if value is not None:
                env[item["name"]] = value
        return env

    def volumes(self, container, spec):
        os.makedirs(self.dir, exist_ok=True)
        paths = {}
        for volume in spec.get("volumes", []) or []:
            name = volume["name"]
            path = os.path.join(self.dir, "volumes", name)
            if "emptyDir" in volume:
                os.makedirs(path, exist_ok=True)
            elif "secret" in volume or "configMap" in volume:
                plural, field = ("secrets", "secret") if "secret" in volume else ("configmaps", "configMap")
                ref = volume[field].get("secretName") if field == "secret" else volume[field].get("name")
                with self.cluster.lock:
                    obj = self.cluster.objects.get((plural, self.namespace, ref))
                if obj is None:
                    if volume[field].get("optional"):
                        os.makedirs(path, exist_ok=True)
                        paths[name] = path
                        continue
                    raise KeyError(f'MountVolume.SetUp failed for volume "{name}" : {field.lower()} "{ref}" not found')
                os.makedirs(path, exist_ok=True)
                data = obj.get("data", {}) or {}
                items = volume[field].get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    raw = data.get(item["key"])
                    if raw is None:
                        continue
                    content = base64.b64decode(raw) if plural == "secrets" else raw.encode()
                    target = os.path.join(path, item["path"])
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with open(target, "wb") as f:
                        f.write(content)
            elif "persistentVolumeClaim" in volume:
                path = os.path.join(self.cluster.state_dir, "pvc", self.namespace, volume["persistentVolumeClaim"]["claimName"])
                os.makedirs(path, exist_ok=True)
            else:
                raise KeyError(f'volume "{name}": the fake cluster supports secret, configMap, emptyDir and persistentVolumeClaim volumes only')
            os.chmod(path, 0o777)
            paths[name] = path
        mounts = []
        for mount in container.get("volumeMounts", []) or []:
            if mount["name"] not in paths:
                raise KeyError(f'volume "{mount["name"]}" is not declared in the pod')
            source = paths[mount["name"]]
            if mount.get("subPath"):
                source = os.path.join(source, mount["subPath"])
                os.makedirs(source, exist_ok=True)
            mounts.append(f"{source}:{mount['mountPath']}" + (":ro" if mount.get("readOnly") else ""))
        return mounts

    def run_container(self, container, env, mounts, pod, restarts):
        args = ["create", "--name", f"k8s_{container['name']}_{self.name}_{self.namespace}_{self.uid[:8]}_{restarts}",
                "--label", f"{INSTANCE_LABEL}={self.cluster.instance}", "--label", f"io.kubernetes.pod.uid={self.uid}",
                "--hostname", self.name[:63]]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        for m in mounts:
            args += ["-v", m]
        if container.get("workingDir"):
            args += ["--workdir", container["workingDir"]]
        command, cargs = container.get("command") or [], container.get("args") or []
        if command:
            args += ["--entrypoint", command[0]]
        args = deployments.runtime_args(self, pod, args)
        args.append(container["image"])
        args += command[1:] + cargs
        with self.lock:
            if self.terminating.is_set():
                self.finish_without_container(container)
                return None, False, None, None
            result = docker(*args, check=False)
            if result.returncode != 0:
                self.waiting(container, "CreateContainerError", result.stderr.strip())
                self.terminated(container, 128, False, now(), now(), restarts, reason="ContainerCannotRun", message=result.stderr.strip())
                return None, False, None, None
            self.container_id = result.stdout.strip()
            started = docker("start", self.container_id, check=False)
        if started.returncode != 0:
            self.terminated(container, 128, False, now(), now(), restarts, reason="ContainerCannotRun", message=started.stderr.strip())
            return None, False, None, None
        started_at = now()
        info = json.loads(docker("inspect", self.container_id).stdout)[0]
        ip = info.get("NetworkSettings", {}).get("IPAddress") or "172.17.0.2"

        def running(s):
            s["phase"] = "Running"
            s["podIP"] = ip
            s["podIPs"] = [{"ip": ip}]
            s["containerStatuses"] = [{"name": container["name"], "image": container["image"], "imageID": info.get("Image", ""),
                                       "containerID": f"docker://{self.container_id}", "ready": True, "restartCount": restarts,
                                       "started": True, "state": {"running": {"startedAt": started_at}}, "lastState": {}}]
            for kind in ("ContainersReady", "Ready"):
                self.condition(s, kind, "True")
        self.set_status(running)
        waited = docker("wait", self.container_id, check=False, timeout=None)
        try:
            code = int(waited.stdout.strip())
        except ValueError:
            code = 137
        state = json.loads(docker("inspect", self.container_id, check=False).stdout or "[{}]")[0].get("State", {})
        return code, state.get("OOMKilled", False), started_at, now()

    def run_executor(self, container, env, mounts):
        """A Kaniko executor pod: the fake executor (kaniko.py) runs here, its log is the pod's."""
        os.makedirs(self.dir, exist_ok=True)
        log_path = os.path.join(self.dir, "kaniko.log")
        open(log_path, "w").close()
        with self.lock:
            if self.terminating.is_set():
                self.finish_without_container(container)
                return
            self.executor = kaniko.Executor(container, env, mounts, log_path)
            self.log_path = log_path
        started = now()

        def running(s):
            s["phase"] = "Running"
            s["podIP"] = "127.0.0.1"
            s["podIPs"] = [{"ip": "127.0.0.1"}]
            s["containerStatuses"] = [{"name": container["name"], "image": container["image"], "imageID": "",
                                       "containerID": f"fake-kaniko://{self.uid}", "ready": True, "restartCount": 0,
                                       "started": True, "state": {"running": {"startedAt": started}}, "lastState": {}}]
            for kind in ("ContainersReady", "Ready"):
                self.condition(s, kind, "True")
        self.set_status(running)
        code = self.executor.run()
        self.terminated(container, code, False, started, now(), 0)

    def terminated(self, container, code, oom, started, finished, restarts, reason=None, message=None):
        self.finished = True
        reason = reason or ("OOMKilled" if oom else "Completed" if code == 0 else "Error")

        def mutate(s):
            term = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": finished}
            if self.container_id:
                term["containerID"] = f"docker://{self.container_id}"
            if message:
                term["message"] = message
            s["phase"] = "Succeeded" if code == 0 and not self.terminating.is_set() else "Failed"
            pod = self.pod()
            for owner in (pod or {}).get("metadata", {}).get("ownerReferences", []):
                self.cluster.pod_ends.setdefault(owner["uid"], {})[self.uid] = s["phase"]
            s["containerStatuses"] = [{"name": container["name"], "image": container["image"], "imageID": "",
                                       "containerID": term.get("containerID", ""), "ready": False, "restartCount": restarts,
                                       "started": False, "state": {"terminated": term}, "lastState": {}}]
            for kind in ("ContainersReady", "Ready"):
                self.condition(s, kind, "False", "PodCompleted" if code == 0 else "PodFailed")
        self.set_status(mutate)
        if self.terminating.is_set():
            self.cluster.remove("pods", self.namespace, self.name)

    def finish_without_container(self, container):
        self.finished = True
        self.cluster.remove("pods", self.namespace, self.name)

    def terminate(self, grace):
        """A pod deletion: SIGTERM, SIGKILL after the grace period; the pod goes once it stopped."""
        with self.lock:
            self.terminating.set()
            container_id = self.container_id
        if self.executor:
            self.executor.stop()
        if container_id and not self.finished:
            docker("stop", "-t", str(int(grace)), container_id, check=False, timeout=None)
            deadline = time.time() + 10
            while not self.finished and time.time() < deadline:
                time.sleep(0.05)
        if self.finished or not container_id:
            self.cluster.remove("pods", self.namespace, self.name)

    def kill_now(self):
        self.terminating.set()
        if self.container_id:
            docker("rm", "-f", self.container_id, check=False)

    def removed(self):
        self.terminating.set()
        self.gone.set()
        if self.executor:
            self.executor.stop()
        if self.container_id:
            threading.Thread(target=docker, args=("rm", "-f", self.container_id), kwargs={"check": False}, daemon=True).start()


def cluster_event(self, pod, kind, reason, message, component):
    meta = pod["metadata"]
    try:
        self.create("events", meta["namespace"], {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"], "apiVersion": "v1"},
            "reason": reason, "message": message, "type": kind, "source": {"component": component},
            "firstTimestamp": now(), "lastTimestamp": now(), "count": 1}, internal=True)
    except ApiError:
        pass


Cluster.event = cluster_event


# ---------------------------------------------------------------------------------------------
# HTTP


def discovery_resources(group, version):
    resources = []
    for plural, (g, v, kind, namespaced, short) in RESOURCES.items():
        if g != group or v != version:
            continue
        entry = {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind, "verbs": ALL_VERBS}
        if short:
            entry["shortNames"] = short
        resources.append(entry)
        for sub in SUBRESOURCES.get(plural, []):
            verbs = {"log": ["get"], "eviction": ["create"]}.get(sub, ["get", "patch", "update"])
            resources.append({"name": f"{plural}/{sub}", "singularName": "", "namespaced": namespaced,
                              "kind": "Eviction" if sub == "eviction" else kind, "verbs": verbs})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}" if group else version, "resources": resources}


def groups():
    names = sorted({g for g, *_ in RESOURCES.values() if g})
    return [{"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}], "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}} for g in names]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cluster: Cluster = None

    def log_message(self, fmt, *args):
        if os.environ.get("KUBE_FAKE_VERBOSE"):
            super().log_message(fmt, *args)

    # -- replies -----------------------------------------------------------------------------

    def reply(self, code, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self, content_type):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data):
        if data:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    def end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- dispatch ----------------------------------------------------------------------------

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def handle_any(self, method):
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        entry = {"method": method, "path": url.path, "query": query, "time": time.time()}
        cluster = self.cluster
        if not url.path.startswith("/fake/"):
            with cluster.lock:
                cluster.requests.append(entry)
        try:
            if url.path.startswith("/fake/"):
                return self.fake_hook(method, url.path, query)
            if cluster.token and self.headers.get("Authorization") != f"Bearer {cluster.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            body = None
            if raw:
                content_type = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
                entry["content_type"] = content_type
                try:
                    if content_type == "application/apply-patch+yaml" and yaml is not None:
                        body = yaml.safe_load(raw)
                    else:
                        body = json.loads(raw)
                except Exception as error:
                    raise ApiError(400, "BadRequest", f"the body of the request was in an unknown format: {error}")
                entry["body"] = body
            code, answer = self.route(method, url.path, query, body)
            if code is not None:
                self.reply(code, answer)
        except ApiError as error:
            entry["error"] = error.body
            self.reply(error.code, error.body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def fake_hook(self, method, path, query):
        cluster = self.cluster
        if path == "/fake/requests":
            with cluster.lock:
                return self.reply(200, cluster.requests)
        if path == "/fake/stats":
            with cluster.lock:
                return self.reply(200, {"requests": len(cluster.requests), "resourceVersion": cluster.rv, "objects": len(cluster.objects)})
        if path == "/fake/compact" and method == "POST":
            with cluster.lock:
                # Every version so far expires: a watch resumed from one gets
                # 410 Gone; lists answer the new version, which is valid.
                cluster.rv += 1
                cluster.floor = cluster.rv
                cluster.history = []
                cluster.watch_epoch += 1
                cluster.changed.notify_all()
            return self.reply(200, {"floor": cluster.floor})
        if path == "/fake/evict" and method == "POST":
            namespace, name = query.get("namespace", "default"), query.get("name", "")
            kubelet = None
            with cluster.lock:
                pod = cluster.objects.get(("pods", namespace, name))
                if pod:
                    kubelet = cluster.kubelets.get(pod["metadata"]["uid"])
            if pod is None:
                return self.reply(404, not_found("pods", name).body)
            if kubelet:
                kubelet.set_status(lambda s: kubelet.condition(s, "DisruptionTarget", "True", "PreemptionByScheduler", f"{NODE_NAME}: preempting to accommodate a higher priority pod"))
            cluster.delete_quietly("pods", namespace, name, {"gracePeriodSeconds": int(query.get("grace", "1"))})
            return self.reply(200, {"evicted": name})
        self.reply(404, status(404, "NotFound", f"no fake hook {path}"))

    def route(self, method, path, query, body):
        cluster = self.cluster
        parts = [p for p in path.split("/") if p]
        if path in ("/version", "/version/"):
            return 200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-launch-agent-fake", "gitCommit": "0" * 40,
                         "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}
        if path in ("/healthz", "/readyz", "/livez"):
            self.reply(200, b"ok", "text/plain")
            return None, None
        if parts == ["api"]:
            return 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.server.server_address[0] + ":" + str(self.server.server_address[1])}]}
        if parts == ["apis"]:
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups()}
        if len(parts) == 2 and parts[0] == "apis":
            for g in groups():
                if g["name"] == parts[1]:
                    return 200, dict(g, kind="APIGroup", apiVersion="v1")
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if parts == ["api", "v1"]:
            return 200, discovery_resources("", "v1")
        if len(parts) == 3 and parts[0] == "apis":
            if not any(g == parts[1] and v == parts[2] for g, v, *_ in RESOURCES.values()):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return 200, discovery_resources(parts[1], parts[2])
        # resources
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace, name, sub = None, None, None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in RESOURCES:
            namespace, rest = rest[1], rest[2:]
        if not rest or rest[0] not in RESOURCES or RESOURCES[rest[0]][:2] != (group, version):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        plural = rest[0]
        if len(rest) >= 2:
            name = rest[1]
        if len(rest) >= 3:
            sub = rest[2]
            if sub not in SUBRESOURCES.get(plural, []):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespaced = RESOURCES[plural][3]
        if not namespaced and namespace is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if name is None:
            if method == "GET":
                label_preds = parse_label_selector(query.get("labelSelector"))
                field_preds = parse_field_selector(query.get("fieldSelector"))
                if query.get("watch") in ("true", "1"):
                    self.watch(plural, namespace, query, label_preds, field_preds)
                    return None, None
                items, rv = cluster.list(plural, namespace, label_preds, field_preds)
                meta = {"resourceVersion": rv}
                limit = int(query.get("limit") or 0)
                offset = int(base64.b64decode(query["continue"]).decode()) if query.get("continue") else 0
                items = items[offset:]
                if limit and len(items) > limit:
                    meta["continue"] = base64.b64encode(str(offset + limit).encode()).decode()
                    meta["remainingItemCount"] = len(items) - limit
                    items = items[:limit]
                return 200, {"kind": RESOURCES[plural][2] + "List", "apiVersion": api_version(plural), "metadata": meta, "items": items}
            if method == "POST":
                if namespaced and namespace is None:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                if query.get("dryRun") == "All":
                    cluster.validate(plural, copy.deepcopy(body or {}))
                    return 201, body
                return 201, cluster.create(plural, namespace, body)
            if method == "DELETE":
                label_preds = parse_label_selector(query.get("labelSelector"))
                field_preds = parse_field_selector(query.get("fieldSelector"))
                items, _ = cluster.list(plural, namespace, label_preds, field_preds)
                options = dict(body or {})
                options.update({k: (int(v) if k == "gracePeriodSeconds" else v) for k, v in query.items() if k in ("propagationPolicy", "gracePeriodSeconds")})
                deleted = []
                for item in items:
                    try:
                        deleted.append(cluster.delete(plural, item["metadata"].get("namespace"), item["metadata"]["name"], options) or item)
                    except ApiError:
                        pass
                return 200, {"kind": RESOURCES[plural][2] + "List", "apiVersion": api_version(plural), "metadata": {"resourceVersion": str(cluster.rv)}, "items": deleted}
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource")
        # one object
        if sub == "log":
            self.logs(namespace, name, query)
            return None, None
        if sub == "eviction" and method == "POST":
            cluster.get(plural, namespace, name)
            kubelet = None
            with cluster.lock:
                pod = cluster.objects.get(("pods", namespace, name))
                kubelet = cluster.kubelets.get(pod["metadata"]["uid"]) if pod else None
            if kubelet:
                kubelet.set_status(lambda s: kubelet.condition(s, "DisruptionTarget", "True", "EvictionByEvictionAPI", "Eviction API: evicting"))
            cluster.delete_quietly("pods", namespace, name, (body or {}).get("deleteOptions") or {})
            return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
        if method == "GET":
            return 200, cluster.get(plural, namespace, name)
        if method == "PUT":
            return 200, cluster.replace(plural, namespace, name, body or {}, sub)
        if method == "DELETE":
            options = dict(body or {})
            for key in ("propagationPolicy", "gracePeriodSeconds"):
                if key in query:
                    options[key] = int(query[key]) if key == "gracePeriodSeconds" else query[key]
            if options.get("orphanDependents") is True:
                options.setdefault("propagationPolicy", "Orphan")
            if options.get("preconditions", {}).get("uid"):
                if cluster.get(plural, namespace, name)["metadata"]["uid"] != options["preconditions"]["uid"]:
                    raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {options['preconditions']['uid']}")
            gone = cluster.delete(plural, namespace, name, options)
            return 200, gone
        if method == "PATCH":
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if content_type == "application/apply-patch+yaml":
                if not query.get("fieldManager"):
                    raise ApiError(400, "BadRequest", "PATCH, application/apply-patch+yaml: fieldManager is required for apply requests")
                try:
                    current = cluster.get(plural, namespace, name)
                except ApiError as error:
                    if error.code != 404:
                        raise
                    if sub:
                        raise
                    created = copy.deepcopy(body or {})
                    created.setdefault("metadata", {})["name"] = name
                    return 201, cluster.create(plural, namespace, created)
                patched = merge_patch(current, body or {})
            elif content_type == "application/json-patch+json":
                current = cluster.get(plural, namespace, name)
                if not isinstance(body, list):
                    raise ApiError(400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
                patched = json_patch(current, body)
            elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                current = cluster.get(plural, namespace, name)
                patched = merge_patch(current, body or {})
            else:
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")
            patched.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
            if isinstance(body, dict) and (body.get("metadata") or {}).get("resourceVersion"):
                patched["metadata"]["resourceVersion"] = body["metadata"]["resourceVersion"]
            return 200, cluster.replace(plural, namespace, name, patched, sub)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    # -- watch -------------------------------------------------------------------------------

    def watch(self, plural, namespace, query, label_preds, field_preds):
        cluster = self.cluster
        rv = query.get("resourceVersion") or ""
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.time() + timeout
        kind = RESOURCES[plural][2]

        def visible(obj):
            return (namespace is None or obj["metadata"].get("namespace") == namespace) and matches(obj, label_preds, field_preds)

        self.start_stream("application/json")
        send = lambda event_type, obj: self.chunk((json.dumps({"type": event_type, "object": obj}) + "\n").encode())
        with cluster.lock:
            epoch = cluster.watch_epoch
            if rv not in ("", "0") and (not rv.isdigit() or int(rv) < cluster.floor):
                expired = status(410, "Expired", f"too old resource version: {rv} ({cluster.floor + 1})")
                try:
                    send("ERROR", expired)
                    self.end_stream()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
            if rv in ("", "0"):
                initial = [copy.deepcopy(o) for (p, ns, _), o in cluster.objects.items() if p == plural and visible(o)]
                position = cluster.rv
            else:
                initial = []
                position = int(rv)
        try:
            for obj in initial:
                send("ADDED", obj)
            last_bookmark = time.time()
            while time.time() < deadline:
                with cluster.lock:
                    if cluster.watch_epoch != epoch:
                        break
                    pending = [e for e in cluster.history if e[0] > position and e[1] == plural]
                    if not pending:
                        cluster.changed.wait(min(1.0, max(0.05, deadline - time.time())))
                        pending = [e for e in cluster.history if e[0] > position and e[1] == plural]
                    current_rv = cluster.rv
                for event_rv, _, event_type, obj, previous in pending:
                    position = event_rv
                    now_visible = visible(obj)
                    was_visible = previous is not None and visible(previous)
                    if event_type == "MODIFIED" and now_visible and not was_visible:
                        send("ADDED", obj)
                    elif event_type == "MODIFIED" and was_visible and not now_visible:
                        send("DELETED", obj)
                    elif now_visible:
                        send(event_type, obj)
                # every event of this resource up to current_rv was in `pending`
                position = max(position, current_rv)
                if bookmarks and time.time() - last_bookmark >= BOOKMARK_SECONDS:
                    send("BOOKMARK", {"kind": kind, "apiVersion": api_version(plural), "metadata": {"resourceVersion": str(position)}})
                    last_bookmark = time.time()
            self.end_stream()
        except (BrokenPipeError, ConnectionResetError):
            pass

    # -- logs --------------------------------------------------------------------------------

    def logs(self, namespace, name, query):
        cluster = self.cluster
        pod = cluster.get("pods", namespace, name)
        containers = [c["name"] for c in pod["spec"].get("containers", [])]
        container = query.get("container") or (containers[0] if len(containers) == 1 else None)
        if container is None:
            raise ApiError(400, "BadRequest", f"a container name must be specified for pod {name}, choose one of: {containers}")
        if container not in containers:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        with cluster.lock:
            kubelet = cluster.kubelets.get(pod["metadata"]["uid"])
        if kubelet is not None and kubelet.log_path:
            kaniko.serve_log(self, kubelet.log_path, query, lambda: kubelet.finished)
            return
        if kubelet is None or kubelet.container_id is None:
            statuses = pod["status"].get("containerStatuses") or []
            reason = (statuses[0]["state"].get("waiting") or {}).get("reason", "ContainerCreating") if statuses else "ContainerCreating"
            if reason in ("ErrImagePull", "ImagePullBackOff"):
                raise ApiError(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: trying and failing to pull image')
            raise ApiError(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        args = ["logs"]
        if query.get("follow") in ("true", "1"):
            args.append("--follow")
        if query.get("tailLines"):
            args += ["--tail", query["tailLines"]]
        if query.get("timestamps") in ("true", "1"):
            args.append("--timestamps")
        if query.get("sinceSeconds"):
            args += ["--since", f"{query['sinceSeconds']}s"]
        process = subprocess.Popen(["docker", *args, kubelet.container_id], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.start_stream("text/plain")
        try:
            while True:
                data = process.stdout.read1(65536)
                if not data:
                    break
                self.chunk(data)
            self.end_stream()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            process.kill()
            process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM), as a real API server does")
    parser.add_argument("--tls-key", help="the certificate's key (PEM)")
    args = parser.parse_args()
    os.makedirs(args.state_dir, exist_ok=True)
    cluster = Cluster(args.state_dir, args.token)
    Handler.cluster = cluster
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    deployments.serving(cluster, server.server_address[1], args.tls_cert)
    server.daemon_threads = True
    if args.tls_cert:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)

    def stop(*_):
        found = docker("ps", "-aq", "--filter", f"label={INSTANCE_LABEL}={cluster.instance}", check=False).stdout.split()
        if found:
            docker("rm", "-f", *found, check=False)
        os._exit(0)

    def reap():
        # A container whose pod is gone goes too, whatever raced its removal.
        while True:
            time.sleep(5)
            listed = docker("ps", "-a", "--filter", f"label={INSTANCE_LABEL}={cluster.instance}",
                            "--format", '{{.ID}} {{.Label "io.kubernetes.pod.uid"}}', check=False).stdout.split("\n")
            with cluster.lock:
                live = set(cluster.kubelets)
            gone = [line.split()[0] for line in listed if line.strip() and (len(line.split()) < 2 or line.split()[1] not in live)]
            if gone:
                docker("rm", "-f", *gone, check=False)

    threading.Thread(target=reap, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
