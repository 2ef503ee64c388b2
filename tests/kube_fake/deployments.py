"""The FAKE cluster's Deployment controller, PodDisruptionBudgets and in-cluster access for pods.

Part of tests/kube_fake/server.py (a fake kube-apiserver; see its doc), kept in a module of its own.
It stands in for kube-controller-manager's Deployment controller and the kubelet's service-account
token mount, enough for `launch-agent deploy coreweave` to run the agent's own image on the fake.

| part | what it does | as the real one |
|---|---|---|
| PodDisruptionBudgets (policy/v1) | stored and served; `status` counts the selected pods that are Ready | no eviction is refused (the fake's eviction API does not look at them) |
| Deployment controller | keeps `spec.replicas` pods of the pod template, owned by the Deployment, labelled `pod-template-hash`; a changed template replaces the pods (`Recreate`: the old ones go first; `RollingUpdate` is done the same way); status `replicas`, `updatedReplicas`, `readyReplicas`, `availableReplicas`, `observedGeneration`, conditions `Available` and `Progressing`; a deleted Deployment's pods are deleted | there are no ReplicaSets: the pods are owned by the Deployment itself |
| service-account token | every pod whose spec does not set `automountServiceAccountToken: false` gets `/var/run/secrets/kubernetes.io/serviceaccount/` with `token` (the fake's one bearer token: it has no per-account tokens and no authorization), `ca.crt` (its TLS certificate) and `namespace` | real tokens are per service account and bound to the pod |
| pod network | with `KUBE_FAKE_POD_NETWORK=host`, pods run on the host's network, where the fake listens (127.0.0.1): `KUBERNETES_SERVICE_HOST=127.0.0.1` and `KUBERNETES_SERVICE_PORT=<the fake's port>` reach it, as a real pod reaches the `kubernetes` Service | the default (the engine's bridge) keeps what the fake always did |

server.py calls `register` (new kinds), `after_create` (controllers), `serving` (its port and
certificate) and `runtime_args` (a pod's container options).
"""

import copy
import hashlib
import json
import os
import shutil
import threading

TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
POD_NETWORK = os.environ.get("KUBE_FAKE_POD_NETWORK", "bridge")


def register(resources, subresources):
    """Adds the kinds this module serves to the server's tables."""
    resources["poddisruptionbudgets"] = ("policy", "v1", "PodDisruptionBudget", True, ["pdb"])
    subresources["poddisruptionbudgets"] = ["status"]


def serving(cluster, port, tls_cert):
    """Remembers where the fake listens, for the pods' in-cluster config."""
    cluster.serving_port = port
    cluster.tls_cert = tls_cert


def after_create(cluster, plural, obj):
    meta = obj["metadata"]
    if plural == "deployments":
        threading.Thread(target=DeploymentController(cluster, meta["namespace"], meta["name"], meta["uid"]).run, daemon=True).start()
    elif plural == "poddisruptionbudgets":
        threading.Thread(target=pdb_status, args=(cluster, meta["namespace"], meta["name"], meta["uid"]), daemon=True).start()


def runtime_args(kubelet, pod, args):
    """The `docker create` options of `pod`'s container: the service-account mount and the network."""
    args = list(args)
    cluster = kubelet.cluster
    spec = pod.get("spec") or {}
    cert = getattr(cluster, "tls_cert", None)
    if spec.get("automountServiceAccountToken") is not False and cert:
        directory = os.path.join(kubelet.dir, "serviceaccount")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "token"), "w") as f:
            f.write(cluster.token)
        with open(os.path.join(directory, "namespace"), "w") as f:
            f.write(kubelet.namespace)
        shutil.copyfile(cert, os.path.join(directory, "ca.crt"))
        for name in ("token", "namespace", "ca.crt"):
            os.chmod(os.path.join(directory, name), 0o644)
        os.chmod(directory, 0o755)
        args += ["-v", f"{directory}:{TOKEN_DIR}:ro"]
    if POD_NETWORK == "host":
        # `--hostname` cannot be set on the host's network.
        if "--hostname" in args:
            at = args.index("--hostname")
            del args[at:at + 2]
        wanted = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(getattr(cluster, "serving_port", 443))}
        for i, arg in enumerate(args):
            key = arg.split("=", 1)[0]
            if i > 0 and args[i - 1] == "-e" and key in wanted:
                args[i] = f"{key}={wanted.pop(key)}"
        for key, value in wanted.items():
            args += ["-e", f"{key}={value}"]
        args += ["--network", "host"]
    return args


def ready(pod):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions", []))


def selected(pod, selector):
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def pdb_status(cluster, namespace, name, uid):
    while True:
        with cluster.lock:
            pdb = cluster.objects.get(("poddisruptionbudgets", namespace, name))
            if pdb is None or pdb["metadata"]["uid"] != uid:
                return
            selector = pdb["spec"].get("selector") or {}
            pods = [o for (p, ns, _), o in cluster.objects.items() if p == "pods" and ns == namespace and selected(o, selector)]
            healthy = sum(1 for p in pods if ready(p))
            desired = pdb["spec"].get("minAvailable", 0)
            desired = desired if isinstance(desired, int) else 0

            def mutate(o, healthy=healthy, expected=len(pods), desired=desired):
                o["status"] = {"observedGeneration": o["metadata"].get("generation", 1), "currentHealthy": healthy,
                               "desiredHealthy": desired, "expectedPods": expected,
                               "disruptionsAllowed": max(0, healthy - desired)}
            cluster.update_internal("poddisruptionbudgets", namespace, name, mutate)
            cluster.changed.wait(1)


class DeploymentController:
    def __init__(self, cluster, namespace, name, uid):
        self.cluster, self.namespace, self.name, self.uid = cluster, namespace, name, uid

    def owned(self):
        return [o for (p, ns, _), o in self.cluster.objects.items() if p == "pods" and ns == self.namespace
                and any(r.get("uid") == self.uid for r in o["metadata"].get("ownerReferences", []))]

    def run(self):
        cluster = self.cluster
        while True:
            with cluster.lock:
                deployment = cluster.objects.get(("deployments", self.namespace, self.name))
                gone = deployment is None or deployment["metadata"]["uid"] != self.uid or deployment["metadata"].get("deletionTimestamp")
                pods = self.owned()
                if gone:
                    for pod in pods:
                        cluster.delete_quietly("pods", self.namespace, pod["metadata"]["name"], {})
                    return
                self.reconcile(deployment, pods)
                cluster.changed.wait(1)

    def reconcile(self, deployment, pods):
        cluster = self.cluster
        spec = deployment["spec"]
        template = spec.get("template") or {}
        template_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        current = [p for p in live if (p["metadata"].get("labels") or {}).get("pod-template-hash") == template_hash]
        old = [p for p in live if p not in current]
        for pod in old:
            cluster.delete_quietly("pods", self.namespace, pod["metadata"]["name"], {})
        replicas = spec.get("replicas", 1)
        # Recreate: a new pod only once every old one is gone.
        if not old and not [p for p in pods if p["metadata"].get("deletionTimestamp")]:
            for _ in range(replicas - len(current)):
                labels = dict((template.get("metadata") or {}).get("labels") or {})
                labels["pod-template-hash"] = template_hash
                pod = {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"generateName": f"{self.name}-{template_hash}-", "namespace": self.namespace, "labels": labels,
                                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": self.name,
                                                         "uid": self.uid, "controller": True, "blockOwnerDeletion": True}]},
                       "spec": copy.deepcopy(template.get("spec") or {})}
                annotations = (template.get("metadata") or {}).get("annotations")
                if annotations:
                    pod["metadata"]["annotations"] = dict(annotations)
                self.create_pod(pod)
            for pod in current[replicas:]:
                cluster.delete_quietly("pods", self.namespace, pod["metadata"]["name"], {})
        available = sum(1 for p in current if ready(p))
        generation = deployment["metadata"].get("generation", 1)

        def mutate(o):
            status = {"observedGeneration": generation, "replicas": len(live), "updatedReplicas": len(current),
                      "readyReplicas": available, "availableReplicas": available,
                      "unavailableReplicas": max(0, replicas - available)}
            for key in ("readyReplicas", "availableReplicas", "unavailableReplicas", "replicas", "updatedReplicas"):
                if status[key] == 0:
                    del status[key]
            previous = {c["type"]: c for c in (o.get("status") or {}).get("conditions", [])}
            conditions = []
            for kind, value, reason, message in (
                    ("Available", "True" if available >= replicas else "False",
                     "MinimumReplicasAvailable" if available >= replicas else "MinimumReplicasUnavailable",
                     "Deployment has minimum availability." if available >= replicas else "Deployment does not have minimum availability."),
                    ("Progressing", "True", "NewReplicaSetAvailable" if available >= replicas else "ReplicaSetUpdated",
                     f'Pods of template {template_hash} are {"available" if available >= replicas else "progressing"}.')):
                before = previous.get(kind)
                stamp = before["lastTransitionTime"] if before and before["status"] == value else self.now()
                conditions.append({"type": kind, "status": value, "reason": reason, "message": message,
                                   "lastUpdateTime": stamp, "lastTransitionTime": stamp})
            status["conditions"] = conditions
            o["status"] = status
        cluster.update_internal("deployments", self.namespace, self.name, mutate)

    def now(self):
        import datetime
        return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def create_pod(self, pod):
        try:
            self.cluster.create("pods", self.namespace, pod, internal=True)
        except Exception as error:  # the namespace is going, say
            print(f"deployment controller: cannot create a pod for {self.namespace}/{self.name}: {error}", flush=True)
