"""meshagent's resident memory at steady state, renewals included.

Starts what bench/dataplane.py's Envoy path starts (the control plane in this process on
embedded defaults, a mesh with mTLS STRICT, a `server` and a `client` meshagent each with
its Envoy, an upstream server), but with certificates of --lifetime seconds, so the agents
renew every half lifetime or so. Then, for --seconds, it sends a request through the pair
and samples both agents' VmRSS every --every seconds, with their renewal counts
(/status). Prints the samples and the verdict against the goal (≤ 60 MB, Envoy counted
apart). Reports, never asserts; stops by itself.

    DATABASE_URL=postgres://… .venv/bin/python bench/agent_memory.py   # ~1.5 minutes
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import dataplane  # noqa: E402

GOAL_MB = dataplane.GOALS["agent_rss_mb"]


def rss_mb(pid: int) -> dict[str, float]:
    """VmRSS and its parts (anonymous, file-backed), MB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    return out


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="sampling time after ready")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--lifetime", type=int, default=20, help="certificate lifetime, s")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600:
        parser.error(f"--seconds must be in (0, 600]: {args.seconds}")
    if not 0.5 <= args.every <= args.seconds:
        parser.error(f"--every must be in [0.5, --seconds]: {args.every}")
    if not 10 <= args.lifetime <= 24 * 3600:
        parser.error(f"--lifetime must be in [10, 86400]: {args.lifetime}")
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("agent_memory: DATABASE_URL must name a PostgreSQL server")

    os.environ.pop("REDIS_URL", None)  # embedded mode, as bench/dataplane.py
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshapi.settings")
    import django

    django.setup()
    from django.db import connection

    from bench.procs import Child, loadavg
    from meshapi.demo.scene import find_envoy
    from tenants.identity import services

    envoy_binary = find_envoy()
    if envoy_binary is None:
        sys.exit("agent_memory: no Envoy binary: make envoy, or MESHPLANE_ENVOY_BIN")
    # The join and renewal services run in this process (the embedded xDS thread).
    lifetime = datetime.timedelta(seconds=args.lifetime)
    services.certificate_lifetime = lambda mesh: lifetime

    def on_sigterm(signum, frame):
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    root = Path(tempfile.mkdtemp(prefix="bench-agent-memory-"))
    load_before = loadavg()
    original = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"bench_agent_memory_{os.getpid()}"
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    upstream = pair = None
    try:
        upstream = Child(
            "agent-memory-upstream",
            dataplane.guarded([sys.executable, dataplane.SCRIPT, "--upstream", "1024"]),
            dataplane.clean_env(),
        )
        port = json.loads(upstream.read(30))["port"]
        pair = dataplane.start_envoy_pair(root / "envoy", envoy_binary, port, {port})
        print(
            f"agents ready (certificates of {args.lifetime} s); sampling every {args.every:g} s "
            f"for {args.seconds:g} s; load average {load_before} at start",
            flush=True,
        )
        print("t s | agent | VmRSS MB | anon | file | threads | renewals | request")
        peak: dict[str, float] = {}
        start = time.monotonic()
        while True:
            t = time.monotonic() - start
            ok = dataplane._answers(pair.port, dataplane.SERVICE)
            for name, agent in pair.agents.items():
                agent.check_running()
                mem = rss_mb(agent.proc.pid)
                code, body = agent.get("/status")
                renewals = json.loads(body)["identity"]["renewals"] if code == 200 else "?"
                peak[name] = max(peak.get(name, 0.0), mem["VmRSS"])
                print(
                    f"{t:5.1f} | {name} | {mem['VmRSS']:.1f} | {mem['RssAnon']:.1f} | "
                    f"{mem['RssFile']:.1f} | {threads(agent.proc.pid)} | {renewals} | "
                    f"{'ok' if ok else 'FAILED'}",
                    flush=True,
                )
            if t + args.every > args.seconds:
                break
            time.sleep(args.every)
        top = max(peak.values())
        verdict = "met" if top <= GOAL_MB else "NOT met"
        print(f"load average {load_before} before, {loadavg()} after")
        print(f"goal: agent RSS ≤ {GOAL_MB:.0f} MB: max {top:.1f} MB: {verdict}")
        print(f"logs: {root}/")
    finally:
        if pair is not None:
            pair.stop()
        if upstream is not None:
            upstream.stop()
        dataplane.drop_database(connection, original)


if __name__ == "__main__":
    main(sys.argv[1:])
