"""Run a suite under a time limit on a borrowed GPU, and pack its run directory for the trip back.

Why: GPU machines are lent for minutes, one command at a time (10 minutes at most), and a machine given
back keeps nothing. A training suite that needs longer must stop cleanly before the command's limit, and
everything its next step reads (records, env.json, the resolved suite, the checkpoints) must come back
with the reply, so that the next command, or the next lease, continues with `ssmbench run --resume`.

    python scripts/lease.py run suites/synthetic_paper.yaml --tasks induction-heads --seconds 540 --pack $OUT
    python scripts/lease.py resume results/synthetic-paper/<run-id> --seconds 540 --pack $OUT
    python scripts/lease.py unpack /work/.device/<files_at>          # here: back into results/...

Options `run` does not know (`--device cpu`, `--limit 2`) go on to `ssmbench run`.

`run` and `resume` send SIGTERM at --seconds (ssmbench then saves each training state and exits 143), wait
up to --grace seconds for that, and write the run directory as a gzipped tar split into parts that the
device tool brings back (at most 8 files of 16 MiB). A run too large for that with its training states (MQAR's packs
at vocabulary 8,192) is packed without them, and says so: its records and tables come back, and it
continues only on the machine that holds the states, in the next command while that machine is held. `unpack` joins and extracts the parts at the path the
run had on the GPU machine, relative to the repository root, and prints the command that continues it.
The last lines printed say whether the run finished and how to continue it (exit 0: finished, 3: stopped
at its limit, anything else: ssmbench's own exit status).
"""

from __future__ import annotations

import argparse
import io
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

PART_BYTES = 15 * 2**20  # the device tool brings back files of at most 16 MiB
MAX_PARTS = 7            # and at most 8 files: the parts and the manifest
ARCHIVE = "run.tar.gz"
MANIFEST = "run.manifest"
STOPPED_AT_LIMIT = 3
# Not packed: the lock belongs to the GPU machine's process, and a checkpoint's previous generation (the
# fallback for a damaged one) or half-written temporary would double what the trip carries.
LEFT_BEHIND = ("run.lock", ".prev", ".tmp")
# What a run too large for the trip leaves behind as well: its training states (a pack of MQAR's models at
# vocabulary 8,192 holds ~200 MB of them). Records, tables and env.json still come back; the run then
# continues only on the machine that holds the states, while it is held (results/ is kept between calls).
STATES = "train_state.pt"


def run_directories(out: Path) -> set[Path]:
    """Every run directory under out/<suite>/ (a run directory holds suite.resolved.yaml)."""
    return {p.parent for p in out.glob("*/*/suite.resolved.yaml")}


def run_limited(args: list[str], seconds: float, grace: float) -> tuple[int, bool]:
    """Run `python -m ssmbench ARGS`; SIGTERM at `seconds`, SIGKILL after `grace` more. Returns the exit
    status and whether the limit stopped it."""
    process = subprocess.Popen([sys.executable, "-m", "ssmbench", *args])
    try:
        return process.wait(timeout=seconds), False
    except subprocess.TimeoutExpired:
        print(f"lease: {seconds:.0f} s are up: SIGTERM (training states are saved)", flush=True)
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=grace), True
    except subprocess.TimeoutExpired:
        print(f"lease: still running {grace:.0f} s after SIGTERM: SIGKILL", flush=True)
        process.kill()
        return process.wait(), True


def pack(run_dir: Path, root: Path, dest: Path, without_states: bool = False) -> list[Path]:
    """The run directory as a gzipped tar (members relative to `root`) split into parts under `dest`,
    with a manifest naming the run's path (and, `without_states`, saying its training states stayed
    behind). Refuses (ValueError) what the device tool cannot bring back."""
    left = LEFT_BEHIND + ((STATES,) if without_states else ())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(run_dir, arcname=str(run_dir.resolve().relative_to(root.resolve())),
                filter=lambda m: None if m.name.endswith(left) else m)
    data = buffer.getvalue()
    parts = [data[i:i + PART_BYTES] for i in range(0, len(data), PART_BYTES)] or [b""]
    if len(parts) > MAX_PARTS:
        raise ValueError(f"{run_dir}: {len(data) / 2**20:.0f} MiB packed, more than {MAX_PARTS} parts of "
                         f"{PART_BYTES // 2**20} MiB can bring back")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for i, part in enumerate(parts):
        path = dest / f"{ARCHIVE}.{i:02d}"
        path.write_bytes(part)
        written.append(path)
    states = "states left behind\n" if without_states else ""
    (dest / MANIFEST).write_text(f"{run_dir.resolve().relative_to(root.resolve())}\n{len(parts)}\n{states}")
    return written


def pack_what_fits(run_dir: Path, root: Path, dest: Path) -> tuple[list[Path], bool]:
    """pack(), and if the run is too large for the trip, pack() without its training states, saying so.
    Returns the parts and whether the states came along."""
    try:
        return pack(run_dir, root, dest), True
    except ValueError as exc:
        print(f"lease: {exc}: packing it without its training states ({STATES}); the records come back, "
              "but the run continues only on this machine while it is held", flush=True)
        for stale in dest.glob(f"{ARCHIVE}.*"):
            stale.unlink()
        return pack(run_dir, root, dest, without_states=True), False


def unpack(source: Path, root: Path) -> Path:
    """Join the parts under `source` and extract them under `root`; the run directory's path."""
    manifest = source / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{source}: no {MANIFEST} (not a packed run)")
    relative, count, *left = manifest.read_text().splitlines()
    if left:
        print(f"lease: {source}: packed without its training states ({STATES}): this copy has the records and "
              "tables, and cannot be resumed here", flush=True)
    parts = [source / f"{ARCHIVE}.{i:02d}" for i in range(int(count))]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{source}: missing {', '.join(missing)}")
    data = b"".join(p.read_bytes() for p in parts)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(root, filter="data")  # no absolute paths, no links out of root
    return root / relative


def lease(args: argparse.Namespace) -> int:
    root = Path.cwd()
    if args.command == "resume":
        run_dir, ssmbench_args = Path(args.target), ["run", "--resume", args.target]
    else:
        before = run_directories(Path(args.out))
        ssmbench_args = (["run", args.target, "--out", args.out] + (["--tasks", args.tasks] if args.tasks else [])
                         + args.passed_on)
    started = time.monotonic()
    status, stopped = run_limited(ssmbench_args, args.seconds, args.grace)
    if args.command == "run":
        new = run_directories(Path(args.out)) - before
        if len(new) != 1:
            print(f"lease: expected one new run directory under {args.out}, found {len(new)}", file=sys.stderr)
            return status or 1
        (run_dir,) = new
    parts, with_states = pack_what_fits(run_dir, root, Path(args.pack)) if args.pack else ([], True)
    size = sum(p.stat().st_size for p in parts) / 2**20
    print(f"lease: {run_dir} after {time.monotonic() - started:.0f} s, ssmbench exit {status}; "
          f"packed into {len(parts)} part(s), {size:.1f} MiB")
    if stopped or status == 143:
        where = "" if with_states else " on this machine, while it is held (its training states stayed here)"
        print(f"lease: not finished. Continue{where} with: python scripts/lease.py resume {run_dir} --seconds ... "
              "--pack $OUT")
        return STOPPED_AT_LIMIT
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, target in (("run", "suite file"), ("resume", "run directory")):
        sub = commands.add_parser(name)
        sub.add_argument("target", help=target)
        sub.add_argument("--seconds", type=float, required=True, help="SIGTERM after this many seconds")
        sub.add_argument("--grace", type=float, default=120.0,
                         help="SIGKILL this long after SIGTERM (room for a pack member's tests in progress)")
        sub.add_argument("--pack", help="write the packed run directory here (the device's $OUT)")
        if name == "run":
            sub.add_argument("--tasks", help="comma-separated task names")
            sub.add_argument("--out", default="results", help="ssmbench's --out")
    sub = commands.add_parser("unpack")
    sub.add_argument("source", help="the folder holding run.manifest and run.tar.gz.NN")
    args, passed_on = parser.parse_known_args(argv)
    args.passed_on = passed_on
    if args.command == "unpack":
        run_dir = unpack(Path(args.source), Path.cwd())
        print(f"{run_dir}\ncontinue with: python scripts/lease.py resume {run_dir} --seconds ... --pack $OUT")
        return 0
    return lease(args)


if __name__ == "__main__":
    sys.exit(main())
