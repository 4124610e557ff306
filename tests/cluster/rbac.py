"""What each ServiceAccount of the manifests may do in its namespace, as the component needs
it: the table the RBAC tests check against the real authorizer.

One row per (API group, resource, verbs). A Role added to the manifests adds its rows here;
anything the authorizer allows beyond these rows (and what every authenticated user may do)
fails the tests.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Grant:
    """Verbs on one resource (``pods/log`` for a subresource) of one API group (``""`` core)."""

    group: str
    resource: str
    verbs: tuple[str, ...]

    def rules(self) -> set[tuple[str, str, str]]:
        return {(self.group, self.resource, verb) for verb in self.verbs}


# The trainer's `kubernetes` executor creates, lists and deletes one Job per training job,
# lists their pods, and elects its finalizer with a Lease (k8s/base/rbac.yaml): exactly the
# calls its code makes; the predictor only reads the store and calls nothing.
GRANTS: dict[str, tuple[Grant, ...]] = {
    "squarenet-trainer": (
        Grant("batch", "jobs", ("create", "list", "delete")),
        Grant("", "pods", ("list",)),
        Grant("coordination.k8s.io", "leases", ("get", "create", "update")),
    ),
    "squarenet-predictor": (),
}

# Asked of every account besides its own rows: what a compromised pod would want.
PROBES: tuple[Grant, ...] = (
    Grant("", "secrets", ("get", "list", "watch")),
    Grant("", "configmaps", ("get", "update")),
    Grant("", "pods", ("create", "get", "list", "delete")),
    Grant("", "pods/exec", ("create",)),
    Grant("", "pods/log", ("get",)),
    Grant("", "serviceaccounts/token", ("create",)),
    Grant("", "persistentvolumeclaims", ("delete",)),
    Grant("batch", "jobs", ("create", "get", "list", "watch", "delete")),
    Grant("apps", "deployments", ("get", "patch")),
    Grant("apps", "deployments/scale", ("update",)),
    Grant("coordination.k8s.io", "leases", ("get", "create", "update")),
    Grant("rbac.authorization.k8s.io", "roles", ("create", "escalate")),
    Grant("rbac.authorization.k8s.io", "rolebindings", ("create",)),
)


def allowed(account: str) -> set[tuple[str, str, str]]:
    """(group, resource, verb) the account should be allowed, from the table."""
    return {rule for grant in GRANTS[account] for rule in grant.rules()}


def matrix(account: str) -> list[tuple[str, str, str, bool]]:
    """(group, resource, verb, expected answer) for every probe and every row of the table."""
    asked = {rule for grant in (*PROBES, *GRANTS[account]) for rule in grant.rules()}
    expected = allowed(account)
    return [(*rule, rule in expected) for rule in sorted(asked)]
