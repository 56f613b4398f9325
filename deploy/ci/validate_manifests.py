#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests (the output of `kubectl kustomize`).

Usage: validate_manifests.py [--kubernetes-version V ...] RENDERED.yaml ...

Three passes over every object of every file; any finding fails the run (exit 1):
  1. Schema: built-in kinds against the Kubernetes OpenAPI schemas (PyPI kubernetes-validate,
     strict: unknown fields are errors), for each --kubernetes-version. Custom resources the
     deploy files use (MPIJob, LeaderWorkerSet) against the structural schemas below, and their
     embedded pod templates against the real PodTemplateSpec schema. A kind with no schema is
     an error, not a warning.
  2. References inside one rendered variant: ConfigMaps and PVCs that pods name exist; Service,
     PodDisruptionBudget and NetworkPolicy selectors select some pod template; named ports in
     Services, probes and policies exist on the selected containers; a StatefulSet's
     serviceName is a headless Service; no image is left unresolved by kustomize.
  3. bitfleet rules: pods run as non-root; a coordinator or worker pod's grace period exceeds
     the drain deadline (BITFLEET_DRAIN_SECONDS); the worker groups fit the coordinator's
     replica slots (BITFLEET_REPLICAS) and TP degree (BITFLEET_TP): StatefulSet replicas a
     multiple of TP and at most REPLICAS x TP, LeaderWorkerSet size = TP and replicas <=
     REPLICAS, an MPIJob's -np = TP and --replica < REPLICAS.
"""
import argparse
import sys

import jsonschema
import kubernetes_validate
import yaml

DEFAULT_VERSIONS = ["1.30", "1.37"]  # oldest supported (pod-index label GA) and newest schema
# Image names the base manifests use as placeholders; an overlay must replace each one.
PLACEHOLDER_IMAGES = {"bitfleet", "bitfleet-mpi", "bitfleet-coordinator"}
BITFLEET_COMPONENTS = {"coordinator", "worker"}

_REPLICA_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["template"],
    "properties": {
        "replicas": {"type": "integer", "minimum": 0},
        "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
        "template": {"type": "object"},  # checked as a PodTemplateSpec separately
    },
}

# Structural schemas of the custom resources, from the operators' published API types
# (kubeflow/mpi-operator v2beta1, kubernetes-sigs/lws v1), limited to spec fields.
CRD_SCHEMAS = {
    ("kubeflow.org/v2beta1", "MPIJob"): {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["mpiReplicaSpecs"],
                "properties": {
                    "slotsPerWorker": {"type": "integer", "minimum": 1},
                    "runLauncherAsWorker": {"type": "boolean"},
                    "sshAuthMountPath": {"type": "string"},
                    "launcherCreationPolicy": {"enum": ["AtStartup", "WaitForWorkersReady"]},
                    "mpiImplementation": {"enum": ["OpenMPI", "Intel", "MPICH"]},
                    "runPolicy": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "cleanPodPolicy": {"enum": ["None", "Running", "All"]},
                            "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                            "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                            "backoffLimit": {"type": "integer", "minimum": 0},
                            "schedulingPolicy": {"type": "object"},
                            "suspend": {"type": "boolean"},
                            "managedBy": {"type": "string"},
                        },
                    },
                    "mpiReplicaSpecs": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["Launcher", "Worker"],
                        "properties": {"Launcher": _REPLICA_SPEC, "Worker": _REPLICA_SPEC},
                    },
                },
            },
        },
    },
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["leaderWorkerTemplate"],
                "properties": {
                    "replicas": {"type": "integer", "minimum": 0},
                    "startupPolicy": {"enum": ["LeaderCreated", "LeaderReady"]},
                    "rolloutStrategy": {"type": "object"},
                    "networkConfig": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"subdomainPolicy": {"enum": ["Shared", "UniquePerReplica"]}},
                    },
                    "leaderWorkerTemplate": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["workerTemplate"],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1},
                            "restartPolicy": {"enum": ["RecreateGroupOnPodRestart", "None"]},
                            "leaderTemplate": {"type": "object"},
                            "workerTemplate": {"type": "object"},
                            "subGroupPolicy": {"type": "object"},
                            "volumeClaimTemplates": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}


def pod_templates(obj):
    """(where, PodTemplateSpec) for every pod template the object carries."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield kind, spec["template"]
    elif kind == "MPIJob":
        for role, replica_spec in spec.get("mpiReplicaSpecs", {}).items():
            yield f"{kind} {role}", replica_spec.get("template", {})
    elif kind == "LeaderWorkerSet":
        lwt = spec.get("leaderWorkerTemplate", {})
        for role in ("leaderTemplate", "workerTemplate"):
            if role in lwt:
                yield f"{kind} {role}", lwt[role]


def name_of(obj):
    return f"{obj['kind']}/{obj['metadata']['name']}"


class Checker:
    def __init__(self, versions):
        self.versions = versions
        self.errors = []

    def error(self, source, message):
        self.errors.append(f"{source}: {message}")

    # Pass 1 ---------------------------------------------------------------------------------
    def check_schema(self, source, obj):
        crd_schema = CRD_SCHEMAS.get((obj.get("apiVersion"), obj.get("kind")))
        if crd_schema is not None:
            for e in jsonschema.Draft202012Validator(crd_schema).iter_errors(obj):
                path = ".".join(str(p) for p in e.absolute_path)
                self.error(source, f"{name_of(obj)}: {path}: {e.message}")
            for where, template in pod_templates(obj):
                wrapped = {"apiVersion": "v1", "kind": "PodTemplate",
                           "metadata": {"name": "embedded"}, "template": template}
                self.validate_builtin(source, wrapped, f"{name_of(obj)} ({where} template)")
            return
        self.validate_builtin(source, obj, name_of(obj))

    def validate_builtin(self, source, obj, label):
        for version in self.versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                self.error(source, f"{label} (Kubernetes {version}): {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                self.error(source, f"{label}: no schema for {obj.get('apiVersion')} "
                                   f"{obj.get('kind')} (Kubernetes {version})")

    # Pass 2 ---------------------------------------------------------------------------------
    def check_references(self, source, objs):
        by_kind = {}
        for obj in objs:
            by_kind.setdefault(obj["kind"], set()).add(obj["metadata"]["name"])
        pods = [(obj, where, t) for obj in objs for where, t in pod_templates(obj)]

        for obj, where, template in pods:
            spec = template.get("spec", {})
            label = f"{name_of(obj)} ({where})"
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                if c.get("image", "").split(":")[0] in PLACEHOLDER_IMAGES:
                    self.error(source, f"{label}: image '{c['image']}' was not set by kustomize")
                for ref in c.get("envFrom", []):
                    cm = ref.get("configMapRef", {}).get("name")
                    if cm and cm not in by_kind.get("ConfigMap", ()):
                        self.error(source, f"{label}: ConfigMap '{cm}' is not in the output")
                for port_ref in probe_ports(c):
                    if isinstance(port_ref, str) and port_ref not in container_port_names(c):
                        self.error(source, f"{label}: probe port '{port_ref}' is not a port "
                                           f"of container {c['name']}")
            for v in spec.get("volumes", []):
                claim = v.get("persistentVolumeClaim", {}).get("claimName")
                if claim and claim not in by_kind.get("PersistentVolumeClaim", ()):
                    self.error(source, f"{label}: PVC '{claim}' is not in the output")

        for obj in objs:
            kind, spec = obj["kind"], obj.get("spec", {})
            selector = None
            if kind == "Service" and spec.get("selector"):
                selector = spec["selector"]
            elif kind in ("PodDisruptionBudget", "NetworkPolicy"):
                key = "selector" if kind == "PodDisruptionBudget" else "podSelector"
                selector = spec.get(key, {}).get("matchLabels", {})
            if selector is None:
                continue
            selected = [t for _, _, t in pods if matches(selector, t)]
            if not selected:
                self.error(source, f"{name_of(obj)}: selector {selector} matches no pod template")
                continue
            names = set().union(*(pod_port_names(t) for t in selected))
            for port_name in named_target_ports(obj):
                if port_name not in names:
                    self.error(source, f"{name_of(obj)}: port '{port_name}' is not a named port "
                                       f"of the pods it selects")

        services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
        for obj in objs:
            if obj["kind"] != "StatefulSet":
                continue
            svc = services.get(obj["spec"].get("serviceName"))
            if svc is None or svc["spec"].get("clusterIP") != "None":
                self.error(source, f"{name_of(obj)}: serviceName "
                                   f"'{obj['spec'].get('serviceName')}' is not a headless Service")

    # Pass 3 ---------------------------------------------------------------------------------
    def check_bitfleet_rules(self, source, objs):
        config = {}
        for obj in objs:
            if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith("bitfleet-config"):
                config.update(obj.get("data", {}))
        drain = int(config.get("BITFLEET_DRAIN_SECONDS", "0"))
        tp = int(config.get("BITFLEET_TP", "1"))
        slots = int(config.get("BITFLEET_REPLICAS", "1"))
        for obj in objs:
            for where, template in pod_templates(obj):
                label = f"{name_of(obj)} ({where})"
                spec = template.get("spec", {})
                if not spec.get("securityContext", {}).get("runAsNonRoot"):
                    self.error(source, f"{label}: pods must set securityContext.runAsNonRoot")
                component = template.get("metadata", {}).get("labels", {}).get(
                    "app.kubernetes.io/component")
                grace = spec.get("terminationGracePeriodSeconds", 30)
                if component in BITFLEET_COMPONENTS and grace <= drain:
                    self.error(source, f"{label}: terminationGracePeriodSeconds {grace} must "
                                       f"exceed the drain deadline BITFLEET_DRAIN_SECONDS={drain}")
            if obj["kind"] == "StatefulSet" and obj["metadata"]["name"] == "bitfleet-worker":
                replicas = obj["spec"].get("replicas", 1)
                if replicas % tp or replicas > slots * tp:
                    self.error(source, f"{name_of(obj)}: replicas {replicas} must be whole TP "
                                       f"groups of BITFLEET_TP={tp}, at most "
                                       f"BITFLEET_REPLICAS={slots} of them")
            if obj["kind"] == "LeaderWorkerSet":
                size = obj["spec"]["leaderWorkerTemplate"].get("size", 1)
                if size != tp:
                    self.error(source, f"{name_of(obj)}: group size {size} != BITFLEET_TP={tp}")
                if obj["spec"].get("replicas", 1) > slots:
                    self.error(source, f"{name_of(obj)}: more groups than "
                                       f"BITFLEET_REPLICAS={slots} replica slots")
            if obj["kind"] == "MPIJob":
                self.check_mpijob(source, obj, tp, slots)

    def check_mpijob(self, source, obj, tp, slots):
        """The launcher's mpirun starts TP ranks, one per worker pod, as a valid replica."""
        specs = obj["spec"]["mpiReplicaSpecs"]
        launcher = specs["Launcher"]["template"]["spec"]["containers"][0]
        argv = launcher.get("command", []) + launcher.get("args", [])
        np = argv[argv.index("-np") + 1] if "-np" in argv else None
        if np not in (str(tp), "$(BITFLEET_TP)"):
            self.error(source, f"{name_of(obj)}: mpirun -np {np} is not BITFLEET_TP={tp}")
        if specs["Worker"].get("replicas", 1) != tp:
            self.error(source, f"{name_of(obj)}: {specs['Worker'].get('replicas')} worker pods "
                               f"for BITFLEET_TP={tp} ranks")
        replica = [a.split("=", 1)[1] for a in argv if a.startswith("--replica=")]
        if not replica or not replica[0].isdigit() or int(replica[0]) >= slots:
            self.error(source, f"{name_of(obj)}: needs --replica=K with K < "
                               f"BITFLEET_REPLICAS={slots}")


def matches(selector, template):
    labels = template.get("metadata", {}).get("labels", {})
    return all(labels.get(k) == v for k, v in selector.items())


def container_port_names(container):
    return {p["name"] for p in container.get("ports", []) if "name" in p}


def pod_port_names(template):
    spec = template.get("spec", {})
    return set().union(set(), *(container_port_names(c) for c in spec.get("containers", [])))


def probe_ports(container):
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = container.get(probe)
        if not p:
            continue
        for handler in ("httpGet", "tcpSocket", "grpc"):
            if handler in p:
                yield p[handler].get("port")


def named_target_ports(obj):
    """Named (string) ports a Service targets or a NetworkPolicy admits."""
    if obj["kind"] == "Service":
        for p in obj["spec"].get("ports", []):
            if isinstance(p.get("targetPort"), str):
                yield p["targetPort"]
    elif obj["kind"] == "NetworkPolicy":
        for rule in obj["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                if isinstance(p.get("port"), str):
                    yield p["port"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", action="append", dest="versions")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    checker = Checker(args.versions or DEFAULT_VERSIONS)
    total = 0
    for path in args.files:
        with open(path, encoding="utf-8") as f:
            objs = [o for o in yaml.safe_load_all(f) if o]
        total += len(objs)
        for obj in objs:
            checker.check_schema(path, obj)
        checker.check_references(path, objs)
        checker.check_bitfleet_rules(path, objs)
        kinds = ", ".join(sorted({o["kind"] for o in objs}))
        print(f"validate: {path}: {len(objs)} objects ({kinds})")
    for e in checker.errors:
        print(f"ERROR {e}")
    print(f"validate: {total} objects in {len(args.files)} files, "
          f"Kubernetes {', '.join(checker.versions)}: {len(checker.errors)} errors")
    return 1 if checker.errors else 0


if __name__ == "__main__":
    sys.exit(main())
