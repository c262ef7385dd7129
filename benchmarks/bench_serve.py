"""The HTTP server under load: batched (the default queue) against one request at a time.

Two `python -m captioning.serve` processes with the shipped demo release, one after the
other on a free loopback port: `batched` (`--max-batch 32 --max-wait-ms 5`, the defaults)
and `alone` (`--max-batch 1`: every request is encoded and searched on its own, one after
the other). For each of 1, 8 and 32 concurrent clients (threads keeping one HTTP
connection each, sending the six `examples/*.jpg` in turn, greedy), a fixed number of
requests is timed, in rounds that alternate the two sides: requests per second, the p50
and p99 latency of a request as its client saw it, and the server's CPU time per request
(user + system of the server process; it holds steady when other programs load the
machine, where the wall-clock figures do not). Then the batched server answers `--soak` more requests from 32 clients while
its resident memory is read every `--soak / 8` requests: peak memory must not grow with the
number of requests.

Every request goes to 127.0.0.1 only, and every loop is bounded by a count.

Usage:
    python benchmarks/bench_serve.py                      # 400 requests a level, soak 2000
    python benchmarks/bench_serve.py --requests 200 --soak 1000 --json serve.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.jpg"))
BOUNDARY = "benchboundary"
SIDES = {"batched": ["--max-batch", "32", "--max-wait-ms", "5"],
         "alone": ["--max-batch", "1", "--max-wait-ms", "0"]}


class Server:
    """A `python -m captioning.serve --port 0` process; `url` once it is listening."""

    def __init__(self, *flags):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "captioning.serve", "--port", "0", "--warm-beams", "1",
             *flags], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        lines = []
        for line in self.process.stderr:
            lines.append(line)
            found = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
            if found:
                self.url = urllib.parse.urlsplit(found.group(1))
                break
        else:
            raise RuntimeError("the server did not start:\n" + "".join(lines[-20:]))
        threading.Thread(target=lambda: [None for _ in self.process.stderr], daemon=True).start()

    def memory_mib(self) -> dict:
        """The server's resident memory now (VmRSS) and at its peak so far (VmHWM)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        value = lambda key: int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1)) / 1024
        return {"rss": value("VmRSS"), "peak": value("VmHWM")}

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system, all threads)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)


def _body(path: Path) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"{path.name}\"\r\nContent-Type: image/jpeg\r\n\r\n").encode() + \
        path.read_bytes() + f"\r\n--{BOUNDARY}--\r\n".encode()


BODIES = [_body(path) for path in EXAMPLES]


def load(server: Server, clients: int, requests: int) -> dict:
    """`requests` POST /caption from `clients` threads: requests/s, and each latency (ms)."""
    counter = iter(range(requests))
    lock = threading.Lock()
    latencies = []

    def client():
        connection = http.client.HTTPConnection(server.url.hostname, server.url.port,
                                                timeout=300)
        mine = []
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                break
            start = time.perf_counter()
            connection.request("POST", "/caption", body=BODIES[index % len(BODIES)],
                               headers={"Content-Type":
                                        f"multipart/form-data; boundary={BOUNDARY}"})
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"{response.status}: {answer[:200]!r}")
            mine.append(time.perf_counter() - start)
        connection.close()
        with lock:
            latencies.extend(mine)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    elapsed = time.perf_counter() - start
    return {"clients": clients, "requests": requests, "seconds": elapsed,
            "per_second": requests / elapsed, "latencies": [s * 1000 for s in latencies]}


def health(server: Server) -> dict:
    connection = http.client.HTTPConnection(server.url.hostname, server.url.port, timeout=60)
    connection.request("GET", "/health")
    answer = json.loads(connection.getresponse().read())
    connection.close()
    return answer["queue"]


def measure(servers: dict, levels, requests: int, rounds: int) -> list:
    """Each level's rounds, the two sides alternating (so that the machine's other load
    falls on both alike); the median round's req/s, and p50/p99 over all rounds."""
    rows = []
    for clients in levels:
        runs = {name: [] for name in servers}
        for index in range(rounds):
            order = list(servers) if index % 2 == 0 else list(servers)[::-1]
            for name in order:
                before, cpu = health(servers[name]), servers[name].cpu_seconds()
                run = load(servers[name], clients, requests)
                run["cpu_ms"] = (servers[name].cpu_seconds() - cpu) * 1000 / requests
                after = health(servers[name])
                run["batches"] = after["batches"] - before["batches"]
                runs[name].append(run)
        for name, done in runs.items():
            latencies = sorted(ms for run in done for ms in run.pop("latencies"))
            pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
            row = {"side": name, "clients": clients, "requests": requests * rounds,
                   "per_second": statistics.median(run["per_second"] for run in done),
                   "rounds": [round(run["per_second"], 1) for run in done],
                   "p50_ms": pick(0.50), "p99_ms": pick(0.99),
                   "cpu_ms": statistics.median(run["cpu_ms"] for run in done),
                   "mean_batch": requests * rounds / max(1, sum(r["batches"] for r in done))}
            rows.append(row)
            print(f"{name:8s} {clients:3d} clients: {row['per_second']:6.1f} req/s "
                  f"(rounds {row['rounds']}), p50 {row['p50_ms']:6.1f} ms, "
                  f"p99 {row['p99_ms']:6.1f} ms, mean batch {row['mean_batch']:.1f}, "
                  f"server CPU {row['cpu_ms']:.1f} ms a request",
                  flush=True)
    return rows


def soak(server: Server, requests: int, clients: int = 32, samples: int = 8) -> list:
    """Resident memory of a server every `requests / samples` requests."""
    readings = [dict(server.memory_mib(), requests=0)]
    for step in range(1, samples + 1):
        load(server, clients, requests // samples)
        readings.append(dict(server.memory_mib(), requests=step * (requests // samples)))
        print(f"soak {readings[-1]['requests']:5d} requests: RSS "
              f"{readings[-1]['rss']:.0f} MiB, peak {readings[-1]['peak']:.0f} MiB",
              flush=True)
    return readings


def table(rows) -> str:
    lines = ["| clients | side | req/s (median of rounds) | p50 ms | p99 ms | mean batch | "
             "server CPU ms a request |", "| --- " * 7 + "|"]
    for row in sorted(rows, key=lambda row: (row["clients"], row["side"] != "alone")):
        lines.append(f"| {row['clients']} | {row['side']} | {row['per_second']:.1f} | "
                     f"{row['p50_ms']:.0f} | {row['p99_ms']:.0f} | {row['mean_batch']:.1f} | "
                     f"{row['cpu_ms']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=200, help="requests a round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds a level and side")
    parser.add_argument("--warmup", type=int, default=64, help="untimed requests first")
    parser.add_argument("--soak", type=int, default=2000,
                        help="requests of the memory soak (0: none)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    servers = {name: Server(*flags) for name, flags in SIDES.items()}
    try:
        for server in servers.values():
            load(server, 32, args.warmup)
        rows = measure(servers, args.clients, args.requests, args.rounds)
        servers["alone"].stop()
        readings = soak(servers["batched"], args.soak) if args.soak else []
    finally:
        for server in servers.values():
            server.stop()
    print()
    print(table(rows))
    if readings:
        half, last = readings[len(readings) // 2], readings[-1]
        print(f"\nsoak, 32 clients, {last['requests']} requests: RSS "
              + ", ".join(f"{r['rss']:.0f}" for r in readings[1:])
              + f" MiB every {readings[1]['requests']}; peak {last['peak']:.0f} MiB; from "
              f"{half['requests']} to {last['requests']} requests the peak grew "
              f"{last['peak'] - half['peak']:.0f} MiB "
              f"({(last['peak'] - half['peak']) * 1024 / (last['requests'] - half['requests']):.1f}"
              " KiB a request)")
    if args.json:
        Path(args.json).write_text(json.dumps({"levels": rows, "soak": readings}, indent=1))


if __name__ == "__main__":
    main()
