"""Profile our bot under the bench load with py-spy, and print where the time goes.

    .venv/bin/pip install py-spy          # not a project dependency: a tool for this exploration
    .venv/bin/python bench/turns/profile.py [--backend tinydb|postgres] [--seconds 15] [--idle] [--out DIR]

Starts the bench identity, the fake connector and `python -m bot serve` (authentication on) exactly as
`bench/turns/run.py` does, warms it up, then runs `--seconds` of the load generator's mix with
`--conversations` conversations while `py-spy record --format raw` samples the bot (`--rate` Hz; with `--idle`
also threads that wait, i.e. wall time instead of CPU). Writes the collapsed stacks (`profile-<backend>.txt`,
flame-graph input for speedscope or flamegraph.pl) and prints:

* self time by function (the frame that was running), top `--top`;
* inclusive time by function (on the stack), top `--top`, with our own code (`bot/`, `storage/`, `cards/`)
  and the libraries apart;
* inclusive time by package (botbuilder, msrest, aiohttp, json, babel, tinydb, asyncpg, logging, ...).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.turns.common import ROOT
from bench.turns.run import Bench, Target, log

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def frame_parts(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    return match["func"], match["file"]


def package_of(path: str) -> str:
    if "site-packages/" in path:
        rest = path.split("site-packages/", 1)[1]
        return rest.split("/", 1)[0].removesuffix(".py")
    for own in ("/bot/", "/storage/", "/cards/", "/bench/"):
        if own in path:
            return own.strip("/") + " (ours)"
    if "/lib/python3" in path:
        rest = path.split("/lib/python3", 1)[1].split("/", 1)[1]
        return "stdlib:" + rest.split("/", 1)[0].removesuffix(".py")
    return path or "?"


def short(path: str) -> str:
    for marker in ("site-packages/", f"{ROOT}/", "/lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def summarize(collapsed: Path, top: int) -> str:
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if f]
        thread = "?"
        while frames and frames[0].startswith(("process ", "thread ")):
            if frames[0].startswith("thread "):
                thread = frames[0]
            frames = frames[1:]
        threads[thread] += count
        if not frames:
            continue
        func, path = frame_parts(frames[-1])
        self_time[f"{func} ({short(path)})"] += count
        seen: set[str] = set()
        seen_packages: set[str] = set()
        for frame in frames:
            func, path = frame_parts(frame)
            key = f"{func} ({short(path)})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += count
            package = package_of(path)
            if package not in seen_packages:
                seen_packages.add(package)
                packages[package] += count
    if not total:
        return "no samples"
    out = [f"{total} samples; by thread: " + ", ".join(f"{name} {100 * n / total:.1f}%"
                                                     for name, n in threads.most_common(6))]
    out.append("\nself time (top):")
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in self_time.most_common(top)]
    out.append("\ninclusive time (top):")
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    out.append("\ninclusive time by package:")
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in packages.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="tinydb", choices=["tinydb", "postgres"])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--conversations", type=int, default=32)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--idle", action="store_true", help="also sample waiting threads (wall time)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", default=tempfile.gettempdir(), help="folder for profile-<backend>.txt")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--pg-server", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--token-lifetime", type=int, default=3600)
    parser.add_argument("--bot-root", default="", help="profile our bot from this checkout instead")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    tmp = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    bench = Bench(args, tmp)
    out = Path(args.out) / f"profile-{args.backend}{'-idle' if args.idle else ''}.txt"
    try:
        bench.start_fakes()
        store = str(tmp / "store") if args.backend == "tinydb" else bench.create_pg()
        target = Target(f"ours-{args.backend}", "ours", backend=args.backend, store=store)
        bench.start_ours(target)
        bench.load(target, duration=args.warmup, samples=False)
        assert target.child is not None
        argv = [py_spy, "record", "-p", str(target.child.pid), "-r", str(args.rate), "-d", str(int(args.seconds) + 1),
                "--format", "raw", "-o", str(out), "--nonblocking", "--full-filenames", "--threads"]
        if args.idle:
            argv.append("--idle")
        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        summary = bench.load(target, duration=args.seconds, samples=False)
        spy.wait(timeout=60)
        if spy.returncode != 0 and spy.stderr is not None:
            log(f"py-spy: {spy.stderr.read().decode()[-500:]}")
        log(f"{summary['turns']} turns, {summary['throughput']:.0f}/s, p99 {summary['latency_ms']['p99']:.0f} ms, "
            f"cpu {summary['bot_cpu_ms_per_turn']:.2f} ms/turn")
    finally:
        bench.stop_all()
        bench.drop_pg()
        shutil.rmtree(tmp, ignore_errors=True)
    print(summarize(out, args.top))
    print(f"\ncollapsed stacks: {out}")


if __name__ == "__main__":
    main()
