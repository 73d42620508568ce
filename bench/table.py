"""The table of bench/compare.sh: reads the run's results directory, prints
one markdown table (each figure beside its target), writes it with the
machine and the date to OUT/RESULTS.md, and draws OUT/growth.png.

Usage: table.py RESULTS_DIR OUT_DIR (run with the bench's virtualenv,
which has matplotlib).
"""

import json
import os
import statistics
import sys

res, out = sys.argv[1], sys.argv[2]


def have(name):
    return os.path.exists(os.path.join(res, name))


def hf(name):
    """Median wall time in ms of each command of one hyperfine export."""
    with open(os.path.join(res, f"{name}.json")) as f:
        d = json.load(f)
    return {r["command"]: statistics.median(r["times"]) * 1000 for r in d["results"]}


def rss(name):
    """Median peak RSS in MiB of one command's runs."""
    with open(os.path.join(res, f"rss_{name}.txt")) as f:
        v = [int(x) for x in f.read().split()]
    return statistics.median(v) / 1024


machine = {}
pip = []
with open(os.path.join(res, "machine.txt")) as f:
    for line in f:
        line = line.rstrip("\n")
        if line.startswith("pip:"):
            pip.append(line[4:])
        elif "=" in line:
            k, v = line.split("=", 1)
            machine[k] = v

rows = []


def row(*cells):
    rows.append(tuple(cells) + ("",) * (6 - len(cells)))


def section(title):
    row(f"**{title}**")


def verdict(ok):
    return "PASS" if ok else "MISS"


def ms(v):
    return f"{v:.2f} ms" if v < 100 else f"{v:.0f} ms"


if have("cli-status-manage.json"):
    section("Against Django + django-maintenance-mode: whole process, median wall time")
    dj = hf("cli-status-django")
    pairs = [
        ("`offline status` / `maintenance_mode off -v 3` on an OFF site (reads the state)",
         "cli-status-manage", dj["django"]),
        ("`offline on --force` (waits the default settle time, 0.5 s) / `maintenance_mode on`", "cli-on-manage", hf("cli-on-django")["django"]),
        ("`offline off` / `maintenance_mode off`", "cli-off-manage", hf("cli-off-django")["django"]),
        ("`manage --help` / `manage.py help`", "cli-help-manage", hf("cli-help-django")["django"]),
    ]
    for label, name, theirs in pairs:
        ours = hf(name)["manage"]
        r = theirs / ours
        row(label, ms(ours), ms(theirs), f"{r:.0f}x faster", ">= 150x", verdict(r >= 150))
        if name == "cli-on-manage" and have("cli-on-manage-fast.json"):
            ours = hf("cli-on-manage-fast")["manage"]
            r = theirs / ours
            row("`offline on --force` with `refresh_interval = \"1ms\"` (its settle wait 2 ms, not the "
                "default's 0.5 s) / `maintenance_mode on`", ms(ours), ms(theirs), f"{r:.0f}x faster", ">= 150x",
                verdict(r >= 150))
    ours = hf("cli-status-manage")["manage"]
    theirs = hf("cli-status-django-bare")["django-bare"]
    row("`offline status` / bare `maintenance_mode` (no verb: usage error, exit 2)", ms(ours), ms(theirs),
        f"{theirs / ours:.0f}x faster", "(reference)", "")
    section("Against Django: peak RSS (GNU time, median of runs)")
    for label, a, b in (
        ("status", "manage-status", "django-status"),
        ("on", "manage-on", "django-on"),
        ("off", "manage-off", "django-off"),
        ("help", "manage-help", "django-help"),
    ):
        ours, theirs = rss(a), rss(b)
        row(f"peak RSS, {label}", f"{ours:.1f} MiB", f"{theirs:.1f} MiB", f"{theirs / ours:.1f}x smaller",
            "(figure only)", "")

if have("wrk.txt"):
    runs = {}
    with open(os.path.join(res, "wrk.txt")) as f:
        for line in f:
            mode, server, rnd, rate, non2xx = line.split()
            runs.setdefault((mode, server), {})[int(rnd)] = (float(rate), int(non2xx))

    def rates(mode, server):
        return runs[(mode, server)]

    def paired(mode, a, b):
        """Median over rounds of a's rate / b's rate in the same round."""
        ra, rb = rates(mode, a), rates(mode, b)
        return statistics.median(ra[k][0] / rb[k][0] for k in ra if k in rb)

    def med(mode, s):
        return statistics.median(v[0] for v in rates(mode, s).values())

    section("Against Django: requests/s on loopback (wrk, median of alternated rounds; ratio paired by round)")
    for mode in ("ONLINE", "OFFLINE"):
        if (mode, "mysite-layer") not in runs:
            continue
        turned = "" if mode == "ONLINE" else " (turned away: mysite 303, Django 503)"
        r = paired(mode, "mysite-layer", "mysite-bare")
        target = ">= 0.98" if mode == "ONLINE" else "(figure only)"
        row(f"{mode}: mysite with MaintenanceLayer / without{turned}",
            f"{med(mode, 'mysite-layer'):.0f} /s", f"{med(mode, 'mysite-bare'):.0f} /s", f"{r:.3f}", target,
            verdict(r >= 0.98) if mode == "ONLINE" else "")
        r = paired(mode, "django-mw", "django-bare")
        row(f"{mode}: gunicorn + Django with MaintenanceModeMiddleware / without{turned}",
            f"{med(mode, 'django-mw'):.0f} /s", f"{med(mode, 'django-bare'):.0f} /s", f"{r:.3f}",
            "(reference: about 0.82)", "")
        r = paired(mode, "mysite-layer", "django-mw")
        row(f"{mode}: mysite with the layer / Django with the middleware",
            f"{med(mode, 'mysite-layer'):.0f} /s", f"{med(mode, 'django-mw'):.0f} /s", f"{r:.1f}x",
            "(figure only)", "")

if have("floor.json"):
    section("Against the floor: median wall time")
    f = hf("floor")
    row("empty `fn main(){}` (bench-empty)", ms(f["empty"]), "", "", "", "")
    row("`/bin/true`", ms(f["true"]), ms(f["empty"]), f"{f['true'] / f['empty']:.2f}x empty", "", "")
    row("`flock -n FILE true`", ms(f["flock"]), ms(f["empty"]), f"{f['flock'] / f['empty']:.2f}x empty", "", "")
    r = f["help"] / f["path-list"]
    row("`manage --help` / listing manage-* on PATH", ms(f["help"]), ms(f["path-list"]), f"{r:.2f}x",
        "<= 1.3x", verdict(r <= 1.3))
    r = f["status"] / f["empty"]
    row("`offline status`, empty state / empty binary", ms(f["status"]), ms(f["empty"]), f"{r:.2f}x",
        "<= 1.25x", verdict(r <= 1.25))
    r = f["noop"] / f["empty"]
    row("tracked registered no-op / empty binary", ms(f["noop"]), ms(f["empty"]), f"{r:.2f}x", "<= 1.25x",
        verdict(r <= 1.25))
    d = f["external"] - f["script"]
    row("tracked external no-op / the script itself", ms(f["external"]), ms(f["script"]), f"{d:+.2f} ms",
        "<= +1.2 ms", verdict(d <= 1.2))
if have("floor-pg.json"):
    p = hf("floor-pg")
    row("PostgreSQL floor: connect + one statement (bench-pg-floor)", ms(p["floor"]), "", "", "", "")
    d = p["pg-noop"] - p["floor"]
    row("tracked no-op, PostgreSQL / its floor", ms(p["pg-noop"]), ms(p["floor"]), f"{d:+.2f} ms",
        "<= +1.5 ms", verdict(d <= 1.5))
    d = p["pg-status"] - p["floor"]
    row("`offline status`, PostgreSQL / its floor", ms(p["pg-status"]), ms(p["floor"]), f"{d:+.2f} ms",
        "<= +1.0 ms", verdict(d <= 1.0))

growth = []
if have("growth.txt"):
    with open(os.path.join(res, "growth.txt")) as f:
        for line in f:
            backend, kind, n, path = line.split()
            g = hf(os.path.basename(path)[: -len(".json")])
            growth.append((backend, kind, int(n), g["status"], g["on"]))
    section("Growth: median wall time as the state grows (status / on --force; layers refreshing every 1 ms)")
    for backend, kind, n, st, on in growth:
        label = "PostgreSQL" if backend == "postgres" else "file"
        what = kind if n != 1 else kind[:-1]
        row(f"{label}, {n:,} live {what}: `offline status` / `offline on --force`", ms(st), ms(on), "",
            "(figure only)", "")

header = ("figure", "manage", "compared with", "ratio", "target", "")
lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
lines += ["| " + " | ".join(r) + " |" for r in rows]
table = "\n".join(lines)
print(table)

if growth:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, kind in zip(axes, ("sessions", "tasks")):
        for backend, style in (("file", "-"), ("postgres", "--")):
            pts = sorted((n, st, on) for b, k, n, st, on in growth if b == backend and k == kind)
            if not pts:
                continue
            xs = [p[0] for p in pts]
            name = "PostgreSQL" if backend == "postgres" else "file"
            ax.plot(xs, [p[1] for p in pts], style, marker="o", label=f"offline status, {name}")
            ax.plot(xs, [p[2] for p in pts], style, marker="s", label=f"offline on --force, {name}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"live {kind}")
        ax.set_ylabel("median wall time (ms)")
        ax.set_title(f"manage, whole process, by live {kind}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"bench/compare.sh, {machine.get('date', '')}, {machine.get('nproc', '?')} cores, "
                 f"load {machine.get('load', '?')} at start", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "growth.png"), dpi=110)

notes = [
    f"- Date: {machine.get('date', '?')}; machine: {machine.get('nproc', '?')} cores, "
    f"{machine.get('cpu', '?')}, kernel {machine.get('kernel', '?')}, temp dirs on {machine.get('fs', '?')}; "
    f"load average at start {machine.get('load', '?')} (a shared machine: other builds ran beside it).",
    f"- Knobs: {machine.get('settings', '')}.",
    f"- Django {machine.get('django', '?')} from PyPI ({', '.join(p for p in pip if p.lower().startswith(('django', 'gunicorn')))}), "
    "a `django-admin startproject` project on SQLite with the package's default file backend "
    "(`MAINTENANCE_MODE_STATE_FILE_PATH` in the project), DEBUG off, startproject's middleware "
    "with MaintenanceModeMiddleware appended (or not, for the bare app).",
    "- django-maintenance-mode has no status verb: its status row is `maintenance_mode off -v 3` on an OFF site "
    "(it reads the state and prints \"maintenance mode is already off\"); the bare `maintenance_mode` is timed "
    "for reference. on/off runs each start from the other mode (hyperfine --prepare, not timed); manage's "
    "writes are durable (fsync), the package's an atomic rename. `on --force` waits the settle time before it "
    "returns (twice refresh_interval: 0.5 s by default), so that every web layer turns users away by then; "
    "the package's middleware reads its file on every request and has no such wait: its row with "
    "`refresh_interval = \"1ms\"` (a 2 ms wait) compares the work. The growth rows use that setting too.",
    "- Requests/s: the servers pinned to one CPU, wrk (-t1) to the other; gunicorn `-w 1 -k sync` (one sync "
    "worker, no keep-alive), mysite's runserver (one runtime worker); a refresh interval of 250 ms for the layer.",
]
if "pg" in machine:
    notes.append(f"- PostgreSQL: {machine['pg']}; max_connections {machine.get('pg_max_connections', '?')} "
                 "(each live task holds a connection).")
# The soak's section (bench/soak.sh writes it) outlives this rewrite.
soak = ""
try:
    with open(os.path.join(out, "RESULTS.md")) as f:
        kept = f.read()
    if "\n## Soak" in kept:
        soak = kept[kept.index("\n## Soak"):]
except FileNotFoundError:
    pass
with open(os.path.join(out, "RESULTS.md"), "w") as f:
    f.write("# Side-by-side benchmarks: the last run\n\n")
    f.write("Written by `bench/compare.sh` (see bench/README.md). The numbers are a snapshot of one run "
            "on one machine; the script is the truth.\n\n")
    f.write("\n".join(notes) + "\n\n")
    f.write(table + "\n")
    if growth:
        f.write("\n![time against size, log axes](growth.png)\n")
    f.write(soak)
