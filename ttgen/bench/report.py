"""CLI layer (bench): a run's figures (JSON-safe), the checks that make a run fail, and the Markdown table."""

from __future__ import annotations

import time
from typing import Any

from runtime.loadgen.histogram import Histogram


def _cpu(samples: dict[str, dict[str, dict[str, float]]], a: str, b: str) -> dict[str, float]:
    if a not in samples or b not in samples:
        return {}
    return {n: samples[b][n]["cpu_s"] - samples[a][n]["cpu_s"] for n in samples[b] if n in samples[a]}


def summarize(run: Any, hists: dict[str, Histogram], options: dict[str, Any]) -> dict[str, Any]:
    """The report of a finished run (`run`: ttgen.bench.run.Run)."""
    plan, marks, samples = run.plan, run.marks, run.samples
    t = run.totals()
    pcs = sum(1 for u in plan.users if not u.client_type & 0x10)
    report: dict[str, Any] = {
        "scenario": run.opts.scenario,
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "users": len(plan.users),
        "pc": pcs,
        "mobile": len(plan.users) - pcs,
        "msg_servers": len(run.cluster.msg_endpoints()) or run.opts.msg_servers,
        "load_processes": plan.processes,
        "source_addresses": len(plan.sources),
        "counters": {k: int(v) if k != "cpu_s" else round(v, 2) for k, v in t.items()},
        "latency_ms": {k: h.summary() for k, h in hists.items() if h.count},
        "options": options,
    }
    logins_expected = len(plan.users)
    report["logins"] = {"expected": logins_expected, "ok": int(t["login_ok"])}
    last = max((float(p.progress.get("last_login_at", 0)) for p in run.procs), default=0.0)
    for phase in (0, 1):
        if f"login{phase}" in marks and f"login{phase}_done" in marks:
            start = marks[f"login{phase}"]
            done = marks[f"login{phase}_done"]
            report["logins"][f"phase{phase}_seconds"] = round(done - start, 3)
            n = plan.phase_size(phase)
            if n:
                report["logins"][f"phase{phase}_per_s"] = round(n / max(done - start, 1e-9), 1)
    # memory: every cluster process, and the msg servers alone, per logged-in connection
    held = samples.get("held") or {}
    idle = samples.get("idle") or {}
    online = int(run.extra.get("online_at_hold", 0)) or int(t["login_ok"])
    if held and online:
        total = sum(s["rss_kb"] for s in held.values())
        base = sum(s["rss_kb"] for s in idle.values())
        msg = sum(s["rss_kb"] for n, s in held.items() if n.startswith("msg"))
        msg_base = sum(s["rss_kb"] for n, s in idle.items() if n.startswith("msg"))
        report["memory"] = {
            "connections": online,
            "cluster_rss_mb": round(total / 1024, 1),
            "cluster_rss_idle_mb": round(base / 1024, 1),
            "bytes_per_connection_all_processes": round(total * 1024 / online),
            "bytes_per_connection_added": round((total - base) * 1024 / online),
            "msg_rss_mb": round(msg / 1024, 1),
            "msg_bytes_per_connection_added": round((msg - msg_base) * 1024 / online),
            "per_process_rss_mb": {n: round(s["rss_kb"] / 1024, 1) for n, s in held.items()},
        }
    cpu_all = _cpu(samples, "idle", "end")
    if "restart_before" in samples:  # the processes before and after the restart, each from its own start
        before, after = _cpu(samples, "idle", "restart_before"), _cpu(samples, "restart_after", "end")
        cpu_all = {n: before.get(n, 0.0) + after.get(n, 0.0) for n in {*before, *after}}
    report["cpu_s"] = {n: round(v, 2) for n, v in sorted(cpu_all.items())}
    report["cpu_s"]["load_processes"] = round(t["cpu_s"], 2)
    if plan.senders and "traffic" in marks:
        window = _cpu(samples, "traffic_start", "end")
        duration = float(run.opts.duration)
        delivered = max(1.0, t["delivered"])
        report["messages"] = {
            "offered_per_s": round(t["sent"] / duration, 1),
            "delivered_per_s": round(t["delivered"] / duration, 1),
            "expected_deliveries": int(t["sent"] * plan.expected_deliveries_per_message()),
            "cluster_cpu_us_per_delivery": round(1e6 * sum(window.values()) / delivered, 1),
            # the load processes' CPU over the whole run (logins included), per delivery
            "load_cpu_us_per_delivery": round(1e6 * t["cpu_s"] / delivered, 1),
        }
    if "restarted" in marks:
        report["restart"] = {
            "online_before": int(run.extra.get("restart_online_before", 0)),
            "relogins": int(t["relogins"]),
            "stop_to_up_seconds": round(marks["restarted"] - marks["restart"], 2),
            "all_back_after_up_seconds": round(last - marks["restarted"], 2) if last else None,
            "all_back_after_stop_seconds": round(last - marks["restart"], 2) if last else None,
            "reconnect": run.opts.reconnect,
        }
    if "login1" in marks and last:
        report["logins"]["storm_seconds"] = round(last - marks["login1"], 3)
    elif "login0" in marks and last and "restarted" not in marks:
        report["logins"]["all_in_seconds"] = round(last - marks["login0"], 3)
    report["elapsed_s"] = round(time.monotonic() - run.t0, 1)
    return report


def judge(report: dict[str, Any]) -> list[str]:
    """What went wrong in a run (empty: everything logged in, answered and delivered)."""
    c = report["counters"]
    problems = []
    if c["login_ok"] < report["logins"]["expected"]:
        problems.append(
            f"{report['logins']['expected'] - c['login_ok']} of {report['logins']['expected']} users "
            "did not log in"
        )
    for key in ("connect_failed", "login_refused", "login_timeout", "duplicates", "hb_late"):
        if c[key]:
            problems.append(f"{key}: {c[key]}")
    # heartbeats outstanding when a restart closed their connection are not unanswered (without a restart,
    # the lost connection is reported itself)
    unanswered = c["hb_sent"] - c["hb_answered"] - c.get("hb_cut", 0)
    if unanswered > 0:
        problems.append(f"{unanswered} of {c['hb_sent']} heartbeats unanswered")
    if "restart" in report:
        r = report["restart"]
        if r["relogins"] < r["online_before"]:
            problems.append(
                f"only {r['relogins']} of {r['online_before']} users logged in again after the restart"
            )
    elif c["lost"]:
        problems.append(f"{c['lost']} logged-in connections were lost")
    if "messages" in report:
        if c["acked"] < c["sent"]:
            problems.append(f"{c['sent'] - c['acked']} of {c['sent']} messages not acknowledged")
        if c["refused"]:
            problems.append(f"{c['refused']} messages refused or not sent")
        expected = report["messages"]["expected_deliveries"]
        if c["delivered"] < expected:
            problems.append(f"{expected - c['delivered']} of {expected} deliveries missing")
    return problems


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:,.1f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table (one row per figure)."""
    c = report["counters"]
    rows: list[tuple[str, str]] = [
        ("scenario", report["scenario"]),
        ("users (PC / mobile)", f"{report['users']:,} ({report['pc']:,} / {report['mobile']:,})"),
        (
            "msg servers / load processes / source addresses",
            f"{report['msg_servers']} / {report['load_processes']} / {report['source_addresses']}",
        ),
        ("logged in", f"{c['login_ok']:,} of {report['logins']['expected']:,}"),
    ]
    for key, label in (
        ("all_in_seconds", "all logged in after (s)"),
        ("storm_seconds", "storm logged in after (s)"),
    ):
        if key in report["logins"]:
            rows.append((label, f"{report['logins'][key]:,.2f}"))
    cut = f" ({c['hb_cut']:,} cut by the restart)" if c.get("hb_cut") else ""
    rows.append(("heartbeats answered", f"{c['hb_answered']:,} of {c['hb_sent']:,}{cut}"))
    if "messages" in report:
        m = report["messages"]
        rows += [
            (
                "messages offered / delivered per s",
                f"{m['offered_per_s']:,.0f} / {m['delivered_per_s']:,.0f}",
            ),
            (
                "sent / acked / delivered / duplicates",
                f"{c['sent']:,} / {c['acked']:,} / {c['delivered']:,} / {c['duplicates']:,}",
            ),
            ("cluster CPU per delivery (µs)", f"{m['cluster_cpu_us_per_delivery']:,.1f}"),
        ]
    if c.get("login_busy"):
        rows.append(("logins answered busy (tried again)", f"{c['login_busy']:,}"))
    if c.get("ticket_logins") or c.get("ticket_refused"):
        rows.append(
            ("logins with a ticket / tickets refused", f"{c['ticket_logins']:,} / {c['ticket_refused']:,}")
        )
    if c["presence"]:
        per_user = c["presence"] / max(1, report["users"])
        rows.append(("presence notifications received (per user)", f"{c['presence']:,} ({per_user:,.1f})"))
    for name, label in (
        ("login", "login"),
        ("heartbeat", "heartbeat echo"),
        ("ack", "sender ack"),
        ("e2e", "delivery"),
        ("relogin", "reconnect"),
    ):
        since = "from the connection's loss" if name == "relogin" else "from due time"
        s = report["latency_ms"].get(name)
        if s:
            rows.append(
                (
                    f"{label} p50 / p99 / max (ms, {since})",
                    f"{_ms(s['p50_ms'])} / {_ms(s['p99_ms'])} / {_ms(s['max_ms'])}",
                )
            )
    if "memory" in report and report["scenario"] == "connections":
        m = report["memory"]
        rows += [
            (
                "cluster RSS (MB), idle -> held",
                f"{m['cluster_rss_idle_mb']:,.1f} -> {m['cluster_rss_mb']:,.1f}",
            ),
            ("RSS per connection, all processes (bytes)", f"{m['bytes_per_connection_all_processes']:,}"),
            ("RSS added per connection (bytes)", f"{m['bytes_per_connection_added']:,}"),
        ]
    if "restart" in report:
        r = report["restart"]
        rows.append(
            (
                f"reconnect storm ({r['reconnect']}): all back after (s, from cluster up)",
                _ms(r["all_back_after_up_seconds"]),
            )
        )
    cpu = report["cpu_s"]
    rows.append(
        (
            "CPU s: cluster / load processes",
            f"{sum(v for k, v in cpu.items() if k != 'load_processes'):,.1f} / {cpu['load_processes']:,.1f}",
        )
    )
    rows.append(("verdict", "ok" if report.get("ok") else "; ".join(report.get("problems", []))))
    out = ["| figure | value |", "|---|---|"]
    out += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(out)
