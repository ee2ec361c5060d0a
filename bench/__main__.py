"""`python -m bench [--quick] [--scenario echo,broadcast,...]`: run, record, report.

Every run appends one JSON line to bench/results/<timestamp>.jsonl as soon as it
ends, so an interrupted benchmark keeps what it measured. A full run (no --quick)
publishes docs/benchmarks.md, docs/benchmarks.png and docs/benchmarks.jsonl: the scenarios
it ran replace theirs there, the others' published records stay.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from . import procfs, report, scenarios, servers

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = servers.ROOT / "docs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 repetition, 2 s windows, idle up to 10,000")
    parser.add_argument(
        "--scenario",
        default=",".join(scenarios.SCENARIOS),
        help=f"comma-separated, from {','.join(scenarios.SCENARIOS + scenarios.OPT_IN)} (default: all but "
        f"{','.join(scenarios.OPT_IN)}, which runs only when named: 10+ minutes)",
    )
    parser.add_argument("--servers", default=",".join(servers.KINDS), help="comma-separated subset of the servers")
    parser.add_argument("--match", default="", help="only cases whose name contains this text")
    parser.add_argument("--reps", type=int, help="repetitions (default 3, or 1 with --quick; the soak: 1)")
    parser.add_argument(
        "--idle-sizes",
        help="idle counts, comma-separated (default 1000,10000,100000; past the file limit: the most that fit)",
    )
    parser.add_argument(
        "--publish", action=argparse.BooleanOptionalAction, help="write docs/benchmarks.* (default: not with --quick)"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the server in every run (results/*.pyspy)")
    parser.add_argument("--report", metavar="JSONL", help="only rebuild the report from an existing results file")
    return parser.parse_args(argv)


def summary(record: dict[str, Any]) -> str:
    if not record.get("ok") and record.get("error"):
        return f"FAILED {record['error']}"
    if record.get("scenario") == "soak" and "landmarks" in record:
        from . import soak

        return soak.summary(record)
    parts = []
    for key, label in (
        ("throughput", "msg/s"),
        ("server_us_per_msg", "server us/msg"),
        ("server_run_us_per_msg", "(to the ns)"),
        ("rss_per_connection_kb", "KB/conn"),
        ("ramp_per_s", "conn/s"),
        ("knee_chats", "knee"),
        ("added_ms", "added ms"),
    ):
        if record.get(key) is not None:
            parts.append(f"{record[key]} {label}")
    latency = record.get("latency_us") or {}
    if latency.get("p99") is not None:
        parts.append(f"p50/p99 {latency.get('p50')}/{latency.get('p99')} us")
    parts.append(f"client {record.get('client_cpu_pct')}%")
    instance = record.get("instance_us_per_msg")
    if instance:
        parts.append("per instance us/msg " + "/".join(str(v) for v in instance.values()))
    if record.get("redis_publish_calls") is not None:
        parts.append(f"Redis PUBLISH {record['redis_publish_calls']}")
    if record.get("redis_channels") is not None:
        parts.append(f"Redis channels {record['redis_channels']}")
    if record.get("double_cpu_pct") is not None:
        parts.append(f"double {record['double_cpu_pct']}% ({record.get('double_us_per_msg')} us/msg)")
    if record.get("core1_cpu_pct") is not None and record.get("double_cpu_pct") is not None:
        parts.append(f"core 1 {record['core1_cpu_pct']}%")
    if record.get("service_messages_per_send"):
        per = record["service_messages_per_send"]
        parts.append("service msgs/send " + ", ".join(f"{k} {v}" for k, v in per.items() if k != "Ping"))
    if record.get("double_bound"):
        parts.append("DOUBLE-BOUND")
    if record.get("saturated"):
        parts.append("CLIENT-SATURATED")
    if record.get("errors"):
        parts.append(f"{record['errors']} errors")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report:
        target = DOCS / "benchmarks" if args.publish else Path(args.report).with_suffix("")
        report.write(report.load(Path(args.report)), target)
        print(f"wrote {target}.md and {target}.png")
        return
    if shutil.which("taskset") is None:
        sys.exit("taskset (util-linux) is required to pin the server and the load generator")
    procfs.raise_nofile()
    backlog = scenarios.netdev_max_backlog()
    if backlog < 10_000 and ("broadcast" in args.scenario or "scaleout" in args.scenario):
        print(
            f"warning: net.core.netdev_max_backlog is {backlog}: 5,000-connection fan-outs will lose loopback "
            "packets to it and measure TCP retransmits (sysctl -w net.core.netdev_max_backlog=30000)",
            file=sys.stderr,
        )
    timing = scenarios.QUICK if args.quick else scenarios.FULL
    reps = args.reps or timing.reps
    idle_sizes: tuple[int, ...] = (1000, 10000) if args.quick else (1000, 10000, 100_000)
    if args.idle_sizes:
        idle_sizes = tuple(int(n) for n in args.idle_sizes.split(","))
    chosen = tuple(s.strip() for s in args.scenario.split(",") if s.strip())
    kinds = tuple(k.strip() for k in args.servers.split(","))
    cases = [c for c in scenarios.all_cases(timing, chosen, idle_sizes) if args.match in c.name]
    run_id = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{run_id}.jsonl"
    print(f"{len(cases)} cases x {reps} reps -> {out}", flush=True)
    records: list[dict[str, Any]] = []
    with out.open("a") as sink:
        for case in cases:
            case_reps = args.reps or case.reps or reps
            for rep in range(case_reps):
                for kind in case.kinds:
                    if servers.base_kind(kind) not in kinds:
                        continue
                    print(f"[{case.scenario}] {case.name} | {kind} | rep {rep + 1}/{case_reps}", flush=True)
                    profile_to = None
                    if args.profile:
                        slug = "".join(ch if ch.isalnum() else "-" for ch in f"{case.scenario}-{case.name}-{kind}")
                        profile_to = RESULTS / f"{run_id}-{slug}-{rep}.pyspy"
                    record = scenarios.run_case(case, kind, rep, run_id, args.quick, profile_to)
                    records.append(record)
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()
                    print(f"    {summary(record)}", flush=True)
                    if profile_to is not None and profile_to.exists():
                        from . import profile

                        print("      " + "\n      ".join(profile.hot_spots(profile_to, 20)), flush=True)
    publish = args.publish if args.publish is not None else not args.quick
    target = DOCS / "benchmarks" if publish else out.with_suffix("")
    if publish:
        records = published_with(records)
        (DOCS / "benchmarks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    report.write(records, target)
    print(f"wrote {target}.md and {target}.png", flush=True)


def published_with(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The published records with this run's: its scenarios' records replace the published
    ones of the same scenarios, the others stay (`--scenario soak` adds the soak to the page)."""
    published = DOCS / "benchmarks.jsonl"
    ran = {r["scenario"] for r in records}
    kept = [r for r in report.load(published) if r["scenario"] not in ran] if published.is_file() else []
    return kept + records


if __name__ == "__main__":
    main()
