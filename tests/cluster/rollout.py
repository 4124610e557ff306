"""A rolling update seen pod event by pod event: `kubectl get pods --watch` into a file,
replayed in order, so every intermediate state counts, not only the ones a poll happens to
see."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from support import patient

from cluster.overlays import NAMESPACE, Manifest


def ready(pod: Manifest) -> bool:
    """The pod's Ready condition is True."""
    return any(
        condition["type"] == "Ready" and condition["status"] == "True"
        for condition in pod.get("status", {}).get("conditions", [])
    )


class PodWatch:
    """Pod events of one Deployment from a `kubectl get --watch`, replayed in order: how many
    pods lived and were ready at each moment of a rolling update."""

    def __init__(self, kubeconfig: Path, selector: dict[str, str], log: Path) -> None:
        labels = ",".join(f"{key}={value}" for key, value in selector.items())
        self.log = log
        self._out = log.open("w")
        self.process = subprocess.Popen(
            ["kubectl", f"--kubeconfig={kubeconfig}", "-n", NAMESPACE, "get", "pods", "-l", labels,
             "--watch", "--output-watch-events", "-o", "json"],
            stdout=self._out, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def events(self) -> list[dict[str, Any]]:
        """Every complete event written so far (the last one may still be arriving)."""
        text, decoder, at = self.log.read_text(), json.JSONDecoder(), 0
        found: list[dict[str, Any]] = []
        while True:
            while at < len(text) and text[at].isspace():
                at += 1
            try:
                event, at = decoder.raw_decode(text, at)
            except json.JSONDecodeError:
                return found
            found.append(event)

    def replay(self) -> list[tuple[int, int, set[str]]]:
        """After each event: (live pods, ready live pods, images of live pods). A pod being
        deleted no longer counts as live."""
        pods: dict[str, Manifest] = {}
        states = []
        for event in self.events():
            pod = event["object"]
            if event["type"] == "DELETED":
                pods.pop(pod["metadata"]["uid"], None)
            else:
                pods[pod["metadata"]["uid"]] = pod
            live = [p for p in pods.values() if "deletionTimestamp" not in p["metadata"]]
            images = {c["image"] for p in live for c in p["spec"]["containers"]}
            states.append((len(live), sum(ready(p) for p in live), images))
        return states

    def stop(self) -> None:
        """End the watch (the events stay readable)."""
        self.process.terminate()
        self.process.wait(timeout=patient(10))
        self._out.close()
