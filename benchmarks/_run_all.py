"""Run every benchmark in benchmarks/, then summarise: what ``make bench`` does.

Each script runs as a subprocess from the repository root with the arguments the table below gives
it (``--profile`` for the profile-dependent ones); its output is streamed and kept in
``results/<name>.txt``, and its wall time, exit status, the load average before and after and the
CPU time other processes took meanwhile go to ``results/run_all.json`` (merged with the records of
earlier runs, so ``--only`` keeps the rest). A failing script does not stop the others: it is
reported with its last lines and makes the exit status 1. A script the table does not know (a new
file in benchmarks/) is run with no arguments, so nothing is left out; names starting with ``_``
are not benchmarks. A script whose input data is missing (castle-P30) is reported as skipped.
At the end ``_summary.py`` writes results/summary.json and summary.md and prints the table
(``--update-readme``: also into README.md's results region).

    python benchmarks/_run_all.py [--profile quick] [--only NAME ...] [--skip NAME ...] [--update-readme]
    python benchmarks/_run_all.py --list          # what would run, with which arguments
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import platform
import re
import resource
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from _common import machine as _common_machine

HERE = Path(__file__).resolve().parent
TAIL_LINES = 20


def castle_p30_missing(bench_dir: Path) -> str | None:
    """Why castle_p30.py cannot run here (its photos are not where it looks), or None."""
    default = bench_dir.resolve().parents[1] / "shared/data/real/castle-P30"
    path = Path(os.environ.get("CASTLE_P30", default))
    if not (path / "images").is_dir():
        return f"castle-P30 not found at {path} (set CASTLE_P30 to its folder: images/, gt_colmap/)"
    return None


@dataclass(frozen=True)
class Bench:
    name: str
    profiled: bool = False          # gets --profile and writes results/<name>_<profile>.json
    args: tuple[str, ...] = ()      # further arguments
    missing: object = None          # callable(bench_dir) -> reason to skip, or None
    skip_pattern: str | None = None  # output that means "skipped for want of data", not a failure

    def argv(self, profile: str) -> list[str]:
        return (["--profile", profile] if self.profiled else []) + list(self.args)

    def key(self, profile: str) -> str:
        """The record's name: the stem of the results file the script writes."""
        return f"{self.name}_{profile}" if self.profiled else self.name


#: Every benchmark, in the order they run: quick timing benchmarks first on a quiet machine, then the
#: pipeline (SfM and labels before what trains on the labels; the server after the studies, whose
#: cached model it serves), then the long ones.
BENCHMARKS = [
    Bench("render_speed"),
    Bench("train_speed"),
    Bench("sfm_labels", profiled=True),
    Bench("localize", profiled=True),
    Bench("train_studies", profiled=True),
    Bench("conclusions", profiled=True),  # after the studies: it scores their cached models
    Bench("serve_latency"),
    Bench("castle_p30", missing=castle_p30_missing, skip_pattern=r"castle-P30 not found"),
    Bench("scaling", profiled=True),
    Bench("book_time"),  # its own default: the quick book, whatever --profile says
]
KNOWN = {b.name: b for b in BENCHMARKS}


def discover(bench_dir: Path) -> list[Bench]:
    """The benchmarks to run: the table's scripts that exist, in its order, then every other
    ``*.py`` of ``bench_dir`` (not starting with ``_``) alphabetically, with no arguments."""
    names = sorted(p.stem for p in bench_dir.glob("*.py") if not p.stem.startswith("_"))
    return [b for b in BENCHMARKS if b.name in names] + [Bench(n) for n in names if n not in KNOWN]


# ----------------------------------------------------------------------------------- the machine

def _gpu() -> str | None:
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=20)
        names = [n.strip() for n in r.stdout.splitlines() if n.strip()]
        return ", ".join(names) if r.returncode == 0 and names else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict:
    """What the figures were measured on (no hostname: the results may be published): what every
    benchmark records (``_common.machine``), plus the system and the GPU."""
    return {**_common_machine(), "system": f"{platform.system()} {platform.release()}", "gpu": _gpu()}


def _cpu_busy() -> float | None:
    """CPU-seconds the whole machine has spent busy since boot (/proc/stat), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu":
        return None
    v = [int(x) for x in fields[1:]]
    busy = sum(v[:8]) - v[3] - (v[4] if len(v) > 4 else 0)  # all but idle and iowait (guest is in user)
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def now() -> tuple[float, str]:
    t = time.time()
    return t, _dt.datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()


# ----------------------------------------------------------------------------------- running one

class _Tee:
    """Passes a child's output through to our stdout as it comes (progress bars included) and keeps
    a clean copy (each carriage-return-overwritten line in its final state) in a log file."""

    def __init__(self, log_path: Path):
        self.log = open(log_path, "w", encoding="utf-8", errors="replace")
        self.partial = ""
        self.tail: list[str] = []

    def feed(self, chunk: bytes) -> None:
        out = getattr(sys.stdout, "buffer", None)
        if out is not None:
            out.write(chunk)
        else:
            sys.stdout.write(chunk.decode("utf-8", "replace"))
        sys.stdout.flush()
        text = self.partial + chunk.decode("utf-8", "replace")
        *lines, self.partial = text.split("\n")
        for line in lines:
            self._line(line)

    def _line(self, line: str) -> None:
        line = line.rstrip("\r").split("\r")[-1]
        self.log.write(line + "\n")
        self.tail = (self.tail + [line])[-TAIL_LINES:]

    def close(self) -> None:
        if self.partial:
            self._line(self.partial)
            self.partial = ""
        self.log.close()


def run_one(b: Bench, profile: str, bench_dir: Path, results: Path, timeout: float | None = None,
            host: dict | None = None) -> dict:
    script = bench_dir / f"{b.name}.py"
    argv = b.argv(profile)
    shown = f"{bench_dir.name}/{script.name}"  # relative to the repository root, where it runs
    command = " ".join(shlex.quote(str(a)) for a in ["python", str(shown), *argv])
    rec = {"script": f"{script.parent.name}/{script.name}", "command": command, "profile": profile if b.profiled else None,
           "known": b.name in KNOWN, "log": str(results / f"{b.name}.txt"), "machine": host}
    start_ts, start = now()
    rec.update(started=start, started_ts=start_ts)
    reason = b.missing(bench_dir) if callable(b.missing) else None
    if reason:
        end_ts, end = now()
        rec.update(status="skipped", reason=reason, seconds=0.0, finished=end, finished_ts=end_ts)
        print(f"== {b.name}: skipped: {reason}", flush=True)
        return rec
    if b.name not in KNOWN:
        print(f"note: {script.name} is not in the runner's table (benchmarks/_run_all.py): run with no arguments",
              flush=True)
    print(f"== {b.name}: {command}   ({start})", flush=True)
    load_before = _loadavg()
    busy0, own0, t0 = _cpu_busy(), _own_cpu(), time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tee = _Tee(results / f"{b.name}.txt")
    status, code, timed_out = "ok", None, None
    try:
        proc = subprocess.Popen([sys.executable, str(script), *argv], cwd=bench_dir.parent, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as e:
        tee.close()
        end_ts, end = now()
        rec.update(status="failed", reason=f"could not start: {e}", seconds=0.0, finished=end, finished_ts=end_ts)
        print(f"== {b.name}: failed ({rec['reason']})", flush=True)
        return rec
    # a thread copies the output while this one waits, so that the timeout and Ctrl-C act even while
    # the script prints nothing
    reader = threading.Thread(target=_pump, args=(proc.stdout, tee), daemon=True)
    reader.start()
    try:
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            code, status, timed_out = proc.wait(), "failed", f"timed out after {timeout:.0f} s (--timeout)"
    except KeyboardInterrupt:  # stop this script, record it, and let main() stop the run
        _kill(proc)
        status, code = "interrupted", proc.wait()
    reader.join(timeout=5)
    if reader.is_alive():  # something the script started still holds its output: end it
        _kill(proc)
        reader.join(timeout=10)
    tee.close()
    dt = time.perf_counter() - t0
    busy1, own1 = _cpu_busy(), _own_cpu()
    end_ts, end = now()
    other = None
    if busy0 is not None and busy1 is not None and dt > 0:
        other = round(max(0.0, (busy1 - busy0) - (own1 - own0)) / dt, 2)
    if status == "ok" and code != 0:
        status = "failed"
    last = [ln for ln in tee.tail if ln.strip()]
    rec.update(status=status, returncode=code, seconds=round(dt, 1), finished=end, finished_ts=end_ts,
               load_average={"before": load_before, "after": _loadavg()}, other_cpu_cores=other, tail=tee.tail)
    if status == "interrupted":
        rec["reason"] = "interrupted (Ctrl-C or SIGTERM)"
    elif timed_out:
        rec["reason"] = timed_out
    elif status != "ok":
        rec["reason"] = f"exit {code}: {last[-1][:200] if last else 'no output'}"
    if rec["status"] == "failed" and b.skip_pattern and any(re.search(b.skip_pattern, ln) for ln in rec.get("tail", [])):
        rec.update(status="skipped", reason=next(ln for ln in rec["tail"] if re.search(b.skip_pattern, ln)).strip())
    print(f"== {b.name}: {rec['status']} in {rec['seconds']:.0f} s"
          + (f" ({rec['reason']})" if rec.get("reason") else ""), flush=True)
    return rec


def _pump(stream, tee: _Tee) -> None:
    while True:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(4096)
        if not chunk:
            return
        tee.feed(chunk)


def _kill(proc: subprocess.Popen) -> None:
    """Stop the child and everything it started (it runs in its own session)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


# ----------------------------------------------------------------------------------- all of them

def _summary_module():
    spec = importlib.util.spec_from_file_location("_bench_summary", HERE / "_summary.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def status_table(records: list[tuple[str, dict]]) -> str:
    w = max([len(k) for k, _ in records] + [9])
    lines = [f"{'benchmark':<{w}}  {'status':<11}  {'seconds':>8}  note"]
    for key, r in records:
        note = r.get("reason", "")
        lines.append(f"{key:<{w}}  {r['status'] if r['status'] == 'ok' else r['status'].upper():<11}  "
                     f"{r.get('seconds', 0):>8.0f}  {note}")
        if r["status"] == "failed":
            lines += [f"{'':<{w}}    | {ln}" for ln in [ln for ln in r.get("tail", []) if ln.strip()][-8:]]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Benchmarks: " + ", ".join(KNOWN) + " (and any other benchmarks/*.py)")
    p.add_argument("--profile", default="quick", help="profile of the profile-dependent benchmarks (default quick)")
    p.add_argument("--only", nargs="+", action="extend", metavar="NAME", help="run only these benchmarks (script names without .py)")
    p.add_argument("--skip", nargs="+", action="extend", metavar="NAME", default=[], help="do not run these benchmarks")
    p.add_argument("--dir", type=Path, default=HERE, help="the folder of benchmark scripts (default: this one)")
    p.add_argument("--timeout", type=float, default=None, help="seconds after which a script is stopped (default none)")
    p.add_argument("--update-readme", action="store_true", help="also write the table into README.md's results region")
    p.add_argument("--no-summary", action="store_true", help="do not summarise at the end")
    p.add_argument("--list", action="store_true", help="print what would run and exit")
    args = p.parse_args(argv)
    bench_dir = args.dir.resolve()
    results = bench_dir / "results"  # where the scripts write (next to themselves)
    found = discover(bench_dir)
    names = {b.name for b in found}
    for n in [*(args.only or []), *args.skip]:
        if n.removesuffix(".py") not in names:
            p.error(f"no benchmark {n!r} in {bench_dir}; there are: {', '.join(sorted(names)) or 'none'}")
    only = {n.removesuffix(".py") for n in args.only or []}
    skip = {n.removesuffix(".py") for n in args.skip}
    plan = [b for b in found if (not only or b.name in only) and b.name not in skip]
    absent = [b for b in BENCHMARKS if b.name not in names and not only]
    if args.list:
        for b in plan:
            print(f"{b.name:<16} python {bench_dir.name}/{b.name}.py {' '.join(b.argv(args.profile))}"
                  + ("" if b.name in KNOWN else "   (not in the runner's table: no arguments)"))
        for b in absent:
            print(f"{b.name:<16} (no {bench_dir.name}/{b.name}.py)")
        return 0

    # Ctrl-C or a SIGTERM (a CI timeout) stops the running script and everything it started (it runs in
    # its own session, out of reach of the terminal's signals), records it, and ends the run
    def _stop(signum, frame):
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGTERM, _stop)
    try:
        return run_plan(plan, absent, args, bench_dir, results)
    finally:
        signal.signal(signal.SIGTERM, old)


def run_plan(plan: list[Bench], absent: list[Bench], args, bench_dir: Path, results: Path) -> int:
    """Run ``plan``, log it, summarise; the exit status (1 when a script failed, 130 when stopped)."""
    results.mkdir(parents=True, exist_ok=True)
    log_path = results / "run_all.json"
    try:
        log = json.loads(log_path.read_text())
    except (OSError, ValueError):
        log = {}
    log.setdefault("runs", {})
    log["machine"] = machine()
    started = time.perf_counter()
    print(f"running {len(plan)} benchmark(s), profile {args.profile}: {', '.join(b.name for b in plan)}", flush=True)
    done: list[tuple[str, dict]] = []
    interrupted = False

    def save():
        log["last_run"] = {"profile": args.profile, "finished": now()[1],
                           "benchmarks": [k for k, _ in done], "seconds": round(time.perf_counter() - started, 1)}
        log_path.write_text(json.dumps(log, indent=1) + "\n")

    for b in absent:
        rec = {"status": "absent", "reason": f"no {bench_dir.name}/{b.name}.py", "seconds": 0.0,
               "script": f"{bench_dir.name}/{b.name}.py", "finished": now()[1]}
        log["runs"].setdefault(b.key(args.profile), rec)
    for i, b in enumerate(plan, 1):
        print(f"\n[{i}/{len(plan)}] ", end="", flush=True)
        rec = run_one(b, args.profile, bench_dir, results, args.timeout, log["machine"])
        interrupted = rec["status"] == "interrupted"
        log["runs"][b.key(args.profile)] = rec
        done.append((b.key(args.profile), rec))
        save()
        if interrupted:
            break
    save()
    print(f"\n== {len(done)} benchmark(s) in {(time.perf_counter() - started) / 60:.1f} min; "
          f"log: {log_path}\n")
    print(status_table(done) if done else "(nothing run)")
    failed = [k for k, r in done if r["status"] in ("failed", "interrupted")]
    if not args.no_summary:
        print("\n== summary\n", flush=True)
        try:
            summary = _summary_module()
            sargs = ["--profile", args.profile, "--results", str(results)]
            if args.update_readme:
                sargs.append("--readme")
            summary.main(sargs)
        except Exception as e:  # the runs' results stay on disk; the summary can be rerun alone
            print(f"summary failed: {type(e).__name__}: {e}  (rerun: python benchmarks/_summary.py)", file=sys.stderr)
            failed.append("(summary)")
    if failed:
        print(f"\n{len(failed)} failed: {', '.join(failed)}", file=sys.stderr)
        return 130 if interrupted else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
