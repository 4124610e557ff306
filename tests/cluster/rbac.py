"""What each ServiceAccount of the manifests may do in its namespace, as the component needs
it: the table the RBAC tests check against the real authorizer.

One row per (API group, resource, verbs, and the object names they are limited to, if any).
A Role added to the manifests adds its rows here; anything the authorizer allows beyond these
rows (and what every authenticated user may do) fails the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

# The finalizer's Lease with the manifests' store claim (lease_name in
# trainer_service/runner/kubernetes.py), and an object of the same kind that is not the
# account's (another installation's Lease, another Deployment).
LEASE = "squarenet-trainer-finalizer-squarenet-models"
OTHER_NAME = "squarenet-trainer-finalizer-someone-else"


@dataclass(frozen=True)
class Grant:
    """Verbs on one resource (``pods/log`` for a subresource) of one API group (``""`` core),
    on the objects ``names`` only (``resourceNames``), or on any object when it is empty."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    names: tuple[str, ...] = ()

    def rules(self) -> set[tuple[str, str, str]]:
        return {(self.group, self.resource, verb) for verb in self.verbs}


# The trainer's `kubernetes` executor creates, lists and deletes one Job per training job,
# lists their pods, elects its finalizer with a Lease and reads its own Deployment, the Jobs'
# owner (k8s/base/rbac.yaml): exactly the calls its code makes; the predictor only reads the
# store and calls nothing. The Lease is
# read and renewed by name (its installation's, the default store claim's here); `create`
# cannot be limited by name.
GRANTS: dict[str, tuple[Grant, ...]] = {
    "squarenet-trainer": (
        Grant("batch", "jobs", ("create", "list", "delete")),
        Grant("", "pods", ("list",)),
        Grant("coordination.k8s.io", "leases", ("create",)),
        Grant("coordination.k8s.io", "leases", ("get", "update"), (LEASE,)),
        Grant("apps", "deployments", ("get",)),  # the Jobs' owner (--job-owner)
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
    """(group, resource, verb) the account should be allowed on some object, from the table."""
    return {rule for grant in GRANTS[account] for rule in grant.rules()}


def granted(account: str) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """(group, resource, verb, the object names it is limited to or ()), from the table."""
    return {(*rule, grant.names) for grant in GRANTS[account] for rule in grant.rules()}


def named(account: str) -> dict[tuple[str, str, str], tuple[str, ...]]:
    """(group, resource, verb) the account may call on the named objects only -> the names."""
    return {rule: grant.names for grant in GRANTS[account] if grant.names for rule in grant.rules()}


def matrix(account: str) -> list[tuple[str, str, str, str, bool]]:
    """(group, resource, verb, object name or "" for any, expected answer) for every probe
    and every row of the table; a verb limited by name is also asked of its own objects and
    of one that is not its own (OTHER_NAME)."""
    asked = {(*rule, "") for grant in (*PROBES, *GRANTS[account]) for rule in grant.rules()}
    limited = named(account)
    for rule, names in limited.items():
        asked |= {(*rule, name) for name in (*names, OTHER_NAME)}
    everywhere = allowed(account) - set(limited)

    def expected(group: str, resource: str, verb: str, name: str) -> bool:
        rule = (group, resource, verb)
        return rule in everywhere or name in limited.get(rule, ())

    return [(*row, expected(*row)) for row in sorted(asked)]
