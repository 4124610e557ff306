"""``squarenet history`` and ``squarenet traffic``, and how a gate report reads in one line.

``traffic stable=90 canary=10 --shadow candidate=5`` writes the traffic document,
``traffic`` alone shows it and ``traffic --clear`` removes it; ``history`` lists every label
move and traffic change, ``history --at TIME`` what the labels and traffic were then.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rich.table import Table

from squarenet.cli.errors import ExitCode

if TYPE_CHECKING:
    from squarenet.cli.main import Context


def _share(text: str) -> dict[str, Any]:
    label, sep, number = text.partition("=")
    try:
        value = int(number)
    except ValueError:
        value = -1
    if not sep or not label or value < 0:
        raise argparse.ArgumentTypeError(f"expected LABEL=PERCENT, got {text!r}")
    return {"label": label, "weight": value}


def add_rollout_commands(commands: Any) -> None:
    """Register ``history`` and ``traffic`` on the CLI's subparsers."""
    history = commands.add_parser("history", help="label moves and traffic changes of a model")
    history.add_argument("--model", default="square", help="model name (default %(default)s)")
    history.add_argument(
        "--at", metavar="TIME", help="RFC 3339 time: which version each label named then"
    )
    history.set_defaults(handler=cmd_history)

    traffic = commands.add_parser(
        "traffic", help="split calls that name no version between labels (LABEL=PERCENT ...)"
    )
    traffic.add_argument("routes", metavar="LABEL=PERCENT", type=_share, nargs="*")
    traffic.add_argument("--model", default="square", help="model name (default %(default)s)")
    traffic.add_argument(
        "--shadow", metavar="LABEL=PERCENT", type=_share, help="also run that share on LABEL"
    )
    traffic.add_argument(
        "--clear", action="store_true", help="remove the split: back to the served label"
    )
    traffic.set_defaults(handler=cmd_traffic)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


def gate_line(report: Any) -> str:
    """``gate passed: floor_ratio 3.5 <= 50, ...`` (empty when there is no report)."""
    if not isinstance(report, dict) or not isinstance(report.get("checks"), list):
        return ""
    parts = []
    for check in report["checks"]:
        if "value" in check:
            sign = "<=" if check.get("passed") else ">"
            parts.append(
                f"{check['name']} {_number(check['value'])} {sign} {_number(check['limit'])}"
            )
        else:
            parts.append(f"{check['name']}: {check.get('detail', '')}")
    verdict = "passed" if report.get("passed") else "FAILED"
    return f"gate {verdict}: " + ", ".join(parts)


def cmd_history(ctx: Context) -> ExitCode:
    """Print the model's history, or the state at ``--at``."""
    with ctx.trainer() as client:
        answer = client.history(ctx.args.model, ctx.args.at)
    if ctx.args.at is not None:
        return ctx.answer(answer, lambda: _state(answer))
    return ctx.answer(answer, lambda: _history_table(answer.get("history", [])))


def _state(answer: dict[str, Any]) -> str:
    labels = answer.get("labels") or {}
    lines = [f"{label} -> version {version}" for label, version in sorted(labels.items())]
    lines.append(f"traffic: {_traffic_text(answer.get('traffic'))}")
    return "\n".join(lines)


def _traffic_text(document: Any) -> str:
    if not isinstance(document, dict):
        return "none (the served label answers)"
    text = ", ".join(f"{r['label']} {r['weight']}%" for r in document.get("routes", []))
    shadow = document.get("shadow")
    if isinstance(shadow, dict):
        text += f"; shadow {shadow['label']} {shadow['percent']}%"
    return text


def _history_table(entries: list[dict[str, Any]]) -> Table:
    table = Table("at", "change", "gate", "by")
    for entry in entries:
        kind = entry.get("kind")
        if kind == "label":
            change = f"{entry['label']}: {entry.get('previous') or '-'} -> {entry['version']}"
            gate = entry.get("gate") or {}
            verdict = "passed" if gate.get("passed") else "failed"
            if entry.get("forced"):
                verdict += ", forced"
        elif kind == "label-removed":
            change, verdict = f"{entry['label']} removed (was {entry.get('previous')})", ""
        else:
            change, verdict = f"traffic: {_traffic_text(entry.get('traffic'))}", ""
        by = entry.get("by") or {}
        who = by.get("token", "") + (" " if by.get("token") else "") + by.get("client", "")
        table.add_row(entry.get("at", ""), change, verdict, who)
    return table


def cmd_traffic(ctx: Context) -> ExitCode:
    """Show, set or clear the traffic document."""
    args = ctx.args
    with ctx.trainer() as client:
        if args.clear:
            answer = client.traffic(args.model, "DELETE")
        elif args.routes:
            document = {"routes": args.routes, "shadow": None}
            if args.shadow is not None:
                document["shadow"] = {
                    "label": args.shadow["label"],
                    "percent": args.shadow["weight"],
                }
            answer = client.traffic(args.model, "PUT", document)
        else:
            answer = client.traffic(args.model)
    return ctx.answer(answer, lambda: f"{args.model}: {_traffic_text(answer.get('traffic'))}")
