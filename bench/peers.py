"""This API's /predict beside what a team would assemble instead, on the same model and store.

In one run, over the same stores built by the pipeline (same model version, same Feast online
store), each case at each concurrency with the same number of requests:

- `streamflow serve`: `POST /predict`;
- Feast's own feature server (`feast serve` from `feature_repo/`) feeding `mlflow models serve`
  (the version's pyfunc, `--env-manager local`): per request the client calls Feast's
  `/get-online-features`, turns the answer into the model's inputs (the shared `model_inputs`)
  and posts them to MLflow's `/invocations`: the latency is the two calls and the glue;
- the course stack, `bench/textbook_server.py` (Feast SDK read + pyfunc forest per request).

Each server is one process (one worker). Prints p50/p99/rps per case and the ratios, writes
bench/reports/peers.md. The load generators are those of `bench/serve.py`, in their own process.

    .venv/bin/python bench/peers.py --data-dir var
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from serve import (
    DEFAULT_SEEDS,
    REPO_ROOT,
    VENV_BIN,
    drive,
    exchange,
    free_port,
    machine,
    measure,
    ours_command,
    prepare,
    raw_request,
    run_case,
    start,
    textbook_command,
    tree_cpu_seconds,
    tree_rss_mb,
    wait_until,
)

from streamflow.domain.features import FEATURE_NAMES, FEATURE_SERVICE, model_inputs
from streamflow.settings import ServingSettings

OURS = "streamflow serve /predict"
ASSEMBLED = "feast serve + mlflow models serve"
TEXTBOOK = "textbook (course stack)"


# The assembled client (runs in its own process: `peers.py --load-assembled ...`).


def _invocation(feast_answer: bytes) -> bytes | None:
    """MLflow's `/invocations` body for one user from Feast's answer; None if Feast holds none."""
    answer = json.loads(feast_answer)
    raw = {
        name: result["values"]
        for name, result in zip(answer["metadata"]["feature_names"], answer["results"], strict=True)
    }
    if all(raw[name][0] is None for name in FEATURE_NAMES):
        return None
    columns = model_inputs(raw)
    row = [columns[name].tolist()[0] for name in FEATURE_NAMES]
    row = [None if isinstance(value, float) and math.isnan(value) else value for value in row]
    body = {"dataframe_split": {"columns": list(FEATURE_NAMES), "data": [row]}}
    return json.dumps(body).encode()


def _assembled_client(feast_port: int, mlflow_port: int):
    async def client(_port: int, users: list[str], next_index: list[int], out: dict) -> None:
        feast = await asyncio.open_connection("127.0.0.1", feast_port)
        mlflow = await asyncio.open_connection("127.0.0.1", mlflow_port)
        try:
            while next_index[0] < len(users):
                user_id = users[next_index[0]]
                next_index[0] += 1
                started = time.perf_counter()
                query = {"feature_service": FEATURE_SERVICE, "entities": {"user_id": [user_id]}}
                wire = raw_request("POST", "/get-online-features", json.dumps(query).encode())
                status, answer = await exchange(*feast, wire)
                invocation = _invocation(answer) if status == 200 else None
                if invocation is not None:
                    wire = raw_request("POST", "/invocations", invocation)
                    status, prediction = await exchange(*mlflow, wire)
                    if status == 200:
                        (probabilities,) = json.loads(prediction)["predictions"]
                        assert 0.0 <= probabilities[1] <= 1.0, prediction
                out["latencies"].append(time.perf_counter() - started)
                if status != 200 or invocation is None:
                    out["errors"].append(status)
        finally:
            for _, writer in (feast, mlflow):
                writer.close()

    return client


def load_assembled(args: argparse.Namespace) -> None:
    import uvloop

    users = Path(args.user_ids).read_text().split()
    ids = [users[i % len(users)] for i in range(args.requests + args.warmup)]
    client = _assembled_client(args.feast_port, args.mlflow_port)
    (concurrency,) = args.concurrency
    uvloop.run(drive(client, 0, ids[: args.warmup], concurrency))
    json.dump(uvloop.run(drive(client, 0, ids[args.warmup :], concurrency)), sys.stdout)


# The orchestration.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data-dir", type=Path, help="stores built by the pipeline (default: build)"
    )
    parser.add_argument("--seeds", type=Path, default=DEFAULT_SEEDS)
    # The course stack serves about 15 requests/s: a few hundred keep every case to seconds.
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "bench/reports/peers.md")
    parser.add_argument("--load-assembled", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--feast-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mlflow-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--user-ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_assembled:
        load_assembled(args)
        return

    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        env, users_file, _ = prepare(stack, args)
        settings = ServingSettings(data_dir=Path(env["STREAMFLOW_DATA_DIR"]))
        model_uri, tracking_uri = settings.model_uri, settings.tracking_uri
        ports = {name: free_port() for name in ("ours", "textbook", "feast", "mlflow")}
        servers = {
            "ours": start(stack, ours_command(ports["ours"]), env),
            "textbook": start(stack, textbook_command(ports["textbook"]), env),
            # One worker that is never recycled (gunicorn's default restarts it every 1,000
            # requests, in the middle of a case).
            "feast": start(
                stack,
                [str(VENV_BIN / "feast"), "-c", str(REPO_ROOT / "feature_repo"), "serve"]
                + ["-h", "127.0.0.1", "-p", str(ports["feast"]), "--no-access-log"]
                + ["--workers", "1", "--max-requests", "0"],
                env,
            ),
            "mlflow": start(
                stack,
                [str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri]
                + ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(ports["mlflow"])]
                + ["--workers", "1"],
                env | {"MLFLOW_TRACKING_URI": tracking_uri},
            ),
        }
        for name, path in (
            ("ours", "/ready"),
            ("textbook", "/health"),
            ("feast", "/health"),
            ("mlflow", "/ping"),
        ):
            wait_until(f"http://127.0.0.1:{ports[name]}{path}", servers[name], timeout=300)
        print(f"all four servers ready; model {model_uri}", flush=True)

        sent = args.requests + args.warmup
        rows = []
        for concurrency in args.concurrency:
            ours = run_case(
                "raw",
                ports["ours"],
                "/predict",
                users_file,
                concurrency,
                args,
                servers["ours"].pid,
            )
            assembled_command = [sys.executable, __file__, "--load-assembled"]
            assembled_command += ["--feast-port", str(ports["feast"])]
            assembled_command += ["--mlflow-port", str(ports["mlflow"])]
            assembled_command += ["--concurrency", str(concurrency), "--user-ids", str(users_file)]
            assembled_command += ["--requests", str(args.requests), "--warmup", str(args.warmup)]
            assembled = measure_pair(
                assembled_command, servers["feast"].pid, servers["mlflow"].pid, sent
            )
            textbook = run_case(
                "raw",
                ports["textbook"],
                "/predict",
                users_file,
                concurrency,
                args,
                servers["textbook"].pid,
            )
            for case, result in ((OURS, ours), (ASSEMBLED, assembled), (TEXTBOOK, textbook)):
                rows.append({"case": case, "concurrency": concurrency, **result})
                print(
                    f"c={concurrency:<3} {case:<34} p50 {result['p50']:8.2f} ms  "
                    f"p99 {result['p99']:8.2f}  {result['rps']:8.1f} req/s  "
                    f"CPU {result['cpu_us']:8.0f} us/req  errors {result['errors']}",
                    flush=True,
                )
        rss = {
            OURS: tree_rss_mb(servers["ours"].pid),
            ASSEMBLED: tree_rss_mb(servers["feast"].pid) + tree_rss_mb(servers["mlflow"].pid),
            TEXTBOOK: tree_rss_mb(servers["textbook"].pid),
        }
        report = render(rows, rss, args, model_uri, (load_before, os.getloadavg()[0]))
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report)
        print(report)


def measure_pair(command: list[str], feast_pid: int, mlflow_pid: int, sent: int) -> dict:
    """`measure` with the CPU of both assembled servers."""
    mlflow_before = tree_cpu_seconds(mlflow_pid)
    result = measure(command, feast_pid, sent)
    mlflow_cpu = tree_cpu_seconds(mlflow_pid) - mlflow_before
    return result | {"cpu_us": result["cpu_us"] + mlflow_cpu / sent * 1e6}


def render(rows: list[dict], rss: dict, args, model_uri: str, load_avg) -> str:
    by = {(r["case"], r["concurrency"]): r for r in rows}
    lines = [
        "# This API beside its peers",
        "",
        f"`python bench/peers.py`: {args.requests} requests per case after {args.warmup} "
        f"warm-up, the three cases interleaved per concurrency, a seeded random sample of the "
        "real users in turn; "
        f"one model ({model_uri}) and one Feast online store (SQLite), built by the pipeline "
        "from the real seeds. Each server is one process (one worker); the load generators "
        "(`bench/serve.py`'s raw keep-alive sockets, and for the assembled peer a client that "
        "calls Feast's `/get-online-features`, builds the model inputs with the shared "
        "`model_inputs` and posts them to MLflow's `/invocations`) run in their own process on "
        f"loopback. 1-minute load average {load_avg[0]:.1f} before and {load_avg[1]:.1f} after "
        "the run (the machine is shared with other work).",
        "",
        machine(),
        "",
        "| concurrency | case | p50 ms | p99 ms | req/s | servers' CPU µs/req | errors |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['case']} | {r['p50']:.2f} | {r['p99']:.2f} | "
            f"{r['rps']:,.1f} | {r['cpu_us']:,.0f} | {r['errors']} |"
        )
    lines += ["", "Ratios (the peer's figure ÷ this API's; higher is better for this API):", ""]
    lines += ["| concurrency | peer | p50 × | p99 × | this API's req/s ÷ the peer's |"]
    lines += ["|---:|---|---:|---:|---:|"]
    for concurrency in args.concurrency:
        ours = by[(OURS, concurrency)]
        for peer in (ASSEMBLED, TEXTBOOK):
            theirs = by[(peer, concurrency)]
            lines.append(
                f"| {concurrency} | {peer} | {theirs['p50'] / ours['p50']:,.0f} | "
                f"{theirs['p99'] / ours['p99']:,.0f} | {ours['rps'] / theirs['rps']:,.0f} |"
            )
    lines += [
        "",
        "Servers' RSS after the run: "
        + ", ".join(f"{case} {mb:,.0f} MB" for case, mb in rss.items())
        + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
