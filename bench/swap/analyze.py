#!/usr/bin/env python3
"""Reads bench/swap/run.sh's runs (traces, commit events, RSS samples) and writes the swap report and its
SVG plots. Standard library only.

  analyze.py RUNS_DIR OUT.md RATE_LEAD RATE_RANK CONNECTIONS STEADY SWAPS ROUNDS
"""
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


def load_trace(path):
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            rows.append((int(r["scheduled_ns"]), int(r["answered_ns"]), int(r["version"]), r["failed"] == "1"))
    return rows


def load_events(path):
    return [json.loads(l) for l in open(path) if l.strip()]


def load_rss(path):
    with open(path) as f:
        return [(int(r["t_ns"]), int(r["rss_anon_kb"]), int(r["rss_file_kb"])) for r in csv.DictReader(f)]


def window(trace, start, end):
    """Latencies (µs) of requests scheduled in [start, end) and how many of them failed or went unanswered."""
    lat, bad = [], 0
    for s, a, v, failed in trace:
        if start <= s < end:
            if a == 0 or failed:
                bad += 1
            else:
                lat.append((a - s) / 1000)
    lat.sort()
    return lat, bad


def interleaved(trace, events, after_ms=300, gap_ms=400):
    """The swap's own cost, with the machine's drift cancelled: latencies (µs) of requests scheduled in the
    `after_ms` after each commit (when the server loads and swaps) against those scheduled between changes —
    from `gap_ms` after a commit to when the trainer began writing the next version (its writes excluded; for
    the last change, up to a second after its commit). Returns (after, between), each sorted."""
    after, between = [], []
    spans_after, spans_between = [], []
    for i, e in enumerate(events):
        c = e["commit_ns"]
        spans_after.append((c, c + after_ms * 1_000_000))
        end = events[i + 1].get("began_ns", events[i + 1]["commit_ns"]) if i + 1 < len(events) else c + 1_000_000_000
        if end > c + gap_ms * 1_000_000:
            spans_between.append((c + gap_ms * 1_000_000, end))
    for s, a, v, failed in trace:
        if not a or failed:
            continue
        lat = (a - s) / 1000
        if any(lo <= s < hi for lo, hi in spans_after):
            after.append(lat)
        elif any(lo <= s < hi for lo, hi in spans_between):
            between.append(lat)
    after.sort()
    between.sort()
    return after, between


def alternating(trace, events, rest_ms, t_end):
    """p99 during swaps against a steady p99 taken beside them: the changes come in bursts (each event names its own), each
    followed by `rest_ms` without changes. Swap blocks run from a burst's first write to a second after its last
    commit; quiet blocks from there to the next burst's first write (after the last burst, `rest_ms` long).
    Returns (during, quiet, blocks), latencies in µs, sorted; None without bursts."""
    # swap-tool names each change's burst when it rests between them (runs made without rests have none).
    if not events or any("burst" not in e for e in events):
        return None
    bursts = []
    for e in events:
        if not bursts or bursts[-1][0]["burst"] != e["burst"]:
            bursts.append([])
        bursts[-1].append(e)
    if rest_ms <= 0 or len(bursts) < 2:
        return None
    swap_spans, quiet_spans = [], []
    for i, b in enumerate(bursts):
        start = b[0].get("began_ns", b[0]["commit_ns"])
        settled = b[-1]["commit_ns"] + 1_000_000_000
        swap_spans.append((start, settled))
        end = bursts[i + 1][0].get("began_ns", bursts[i + 1][0]["commit_ns"]) if i + 1 < len(bursts) else min(settled + rest_ms * 1_000_000, t_end)
        if end > settled:
            quiet_spans.append((settled, end))
    during, quiet = [], []
    for s, a, v, failed in trace:
        if not a or failed:
            continue
        if any(lo <= s < hi for lo, hi in swap_spans):
            during.append((a - s) / 1000)
        elif any(lo <= s < hi for lo, hi in quiet_spans):
            quiet.append((a - s) / 1000)
    during.sort()
    quiet.sort()
    return during, quiet, len(bursts)


def first_answers(trace, events):
    """Per store change: ms from its commit to the first answer naming its version."""
    answers = sorted((a, v) for s, a, v, failed in trace if a and not failed)
    out = []
    for e in events:
        c, v = e["commit_ns"], e["version"]
        first = next((a for a, ver in answers if a >= c and ver == v), None)
        out.append(None if first is None else (first - c) / 1e6)
    return out


def svg_rss(samples, events, t0, title, table_mib=None):
    width, height, left, right, top, bottom = 760, 300, 60, 20, 30, 40
    xs = [(t - t0) / 1e9 for t, _, _ in samples]
    anon = [a / 1024 for _, a, _ in samples]
    file_ = [f / 1024 for _, _, f in samples]
    max_x = max(xs) if xs else 1
    max_y = max(anon + file_ + ([table_mib] if table_mib else [])) * 1.1 or 1
    px = lambda x: left + x / max_x * (width - left - right)
    py = lambda y: height - bottom - y / max_y * (height - top - bottom)
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
         f'<text x="{left}" y="18" font-size="14">{title}</text>',
         f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="black"/>',
         f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>']
    for i in range(6):
        y = max_y * i / 5
        s.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.0f}</text>')
        s.append(f'<line x1="{left}" y1="{py(y):.1f}" x2="{width - right}" y2="{py(y):.1f}" stroke="#eee"/>')
    for i in range(6):
        x = max_x * i / 5
        s.append(f'<text x="{px(x):.1f}" y="{height - bottom + 16}" text-anchor="middle">{x:.0f}</text>')
    s.append(f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">seconds</text>')
    s.append(f'<text x="14" y="{(top + height - bottom) / 2}" transform="rotate(-90 14 {(top + height - bottom) / 2})" text-anchor="middle">MiB</text>')
    for e in events:
        x = px((e["commit_ns"] - t0) / 1e9)
        color = "#c66" if e["event"] == "rollback" else "#aaa"
        s.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" stroke="{color}" stroke-dasharray="3,3"/>')
    for series, color, name in ((anon, "#1f77b4", "RssAnon (private)"), (file_, "#ff7f0e", "RssFile (mapped store pages, binary)")):
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, series))
        s.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>')
    if table_mib:
        s.append(f'<line x1="{left}" y1="{py(table_mib):.1f}" x2="{width - right}" y2="{py(table_mib):.1f}" stroke="#2ca02c" stroke-dasharray="6,3"/>')
    legend = [("#1f77b4", "RssAnon (private)"), ("#ff7f0e", "RssFile (mapped store pages)"), ("#aaa", "commit (publish)")]
    if any(e["event"] == "rollback" for e in events):
        legend.append(("#c66", "commit (rollback)"))
    if table_mib:
        legend.append(("#2ca02c", "the table's size"))
    for i, (color, name) in enumerate(legend):
        y = top + 14 * i
        s.append(f'<rect x="{width - right - 230}" y="{y}" width="10" height="10" fill="{color}"/>')
        s.append(f'<text x="{width - right - 215}" y="{y + 9}">{name}</text>')
    s.append("</svg>")
    return "\n".join(s) + "\n"


def main():
    runs_dir, out, rate_lead, rate_rank, conns, steady, swaps, rounds = sys.argv[1:9]
    rest_every, rest_ms = (int(sys.argv[9]), int(sys.argv[10])) if len(sys.argv) > 10 else (0, 0)
    trainer = sys.argv[11] if len(sys.argv) > 11 else "nice -n 10"
    results_dir = os.path.dirname(out)
    day = datetime.date.today().isoformat()
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"# swap: publishes, reloads and rollbacks under steady load ({day})", "",
             f"Machine: {cpu}, 2 CPUs, Linux {platform.release()}; release build, commit {commit}; the harness, the trainer and the "
             "server share the machine.",
             f"Command: `bench/swap/run.sh` (STEADY={steady} s, SWAPS={swaps}, ROUNDS={rounds}, interleaved). Each run is one open-loop load "
             f"(arbiter-bench, {conns} connections, latency from the scheduled send): {steady} s of load alone, then {swaps} store "
             "changes one second apart under the same load" + (f", in bursts of {rest_every} each followed by {rest_ms / 1000:.0f} s "
             "without changes" if rest_every else "") + " — `swap-tool publish` commits a new version (the active "
             "version's tensors and manifest with the last bit of one value changed in every float32 tensor under 16 MiB — retrained "
             "heads beside unchanged embedding tables, which the store shares — or, in the `tables` runs, in every float32 tensor: "
             "269 MiB written and read per version; the server loads, checksums, validates and warms it as any new version) or, in the "
             "rollback run, a publish and a rollback in turn. `poll`: the server finds the change at its 100 ms poll; `reload`: the "
             f"trainer sends RELOAD after the commit. The trainer runs under `{trainer}`. Steady p99 is over the requests scheduled before "
             "the trainer began writing its first version, swap p99 over those scheduled from then to a second after the last "
             "commit" + (" (in the bursts only: from each burst's first write to a second after its last commit)" if rest_every else "") +
             "; both from the same run. "
             "Commit → first answer: from the commit's return in the trainer to the first RESULT naming that version "
             "(CLOCK_MONOTONIC in both processes).", "",
             "Medians over the rounds:", "",
             "| run | rate /s | steady p50 / p99 / p99.9 µs | during swaps p50 / p99 / p99.9 µs | p99 ratio | p99 ratio, alternating | p99 ratio, interleaved | failed | commit → first answer ms: median / max | RssAnon MiB min–max |",
             "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    details = []
    names = sorted(d for d in os.listdir(runs_dir) if d != "memory" and os.path.exists(os.path.join(runs_dir, d, "trace.csv")))
    per_run = []
    groups = {}
    for name in names:
        base = name.rsplit(".", 1)[0]
        d = os.path.join(runs_dir, name)
        trace = load_trace(os.path.join(d, "trace.csv"))
        events = load_events(os.path.join(d, "events.jsonl"))
        rss = load_rss(os.path.join(d, "rss.csv"))
        warmup = float(open(os.path.join(d, "warmup_s")).read())
        t0 = trace[0][0]
        # Steady: until the trainer began writing its first version. During the changes: from then until a
        # second after the last commit, or the end of the load.
        t_end = max(s for s, a, v, f in trace)
        events = [e for e in events if e["commit_ns"] < t_end - 500_000_000]
        steady_end = events[0].get("began_ns", events[0]["commit_ns"])
        swap_start, swap_end = steady_end, min(events[-1]["commit_ns"] + 1_000_000_000, t_end)
        alt = None if "shadow" in base else alternating(trace, events, rest_ms, t_end)
        if "shadow" in base:
            # From 2 s after the shadow was set (its copy written and loaded) to the end of the load.
            swap_start, swap_end = events[0]["commit_ns"] + 2_000_000_000, t_end
        st, st_bad = window(trace, t0 + int(warmup * 1e9), steady_end)
        sw, sw_bad = window(trace, swap_start, swap_end)
        if alt:
            sw = alt[0]   # during swaps: the bursts, not the quiet stretches between them
        control = "control" in base or "shadow" in base
        fa = [] if control else first_answers(trace, events)
        anon = [a / 1024 for t, a, f in rss if t >= t0]
        inter_after, inter_between = ([], []) if "shadow" in base else interleaved(trace, events)
        r = {"name": name, "base": base, "st": st, "sw": sw, "bad": st_bad + sw_bad, "fa": fa, "events": events,
             "inter": (pct(inter_after, 99) / pct(inter_between, 99)) if len(inter_after) > 100 and len(inter_between) > 100 else None,
             "inter_n": (len(inter_after), len(inter_between)),
             "alt": (pct(alt[0], 99) / pct(alt[1], 99)) if alt and len(alt[0]) > 100 and len(alt[1]) > 100 else None,
             "alt_p99": (pct(alt[0], 99), pct(alt[1], 99)) if alt else None,
             "alt_n": (len(alt[0]), len(alt[1]), alt[2]) if alt else None,
             "ratio": pct(sw, 99) / pct(st, 99), "anon": (min(anon), max(anon)), "changes": len(events),
             "span": (events[-1]["commit_ns"] - events[0]["commit_ns"]) / 1e9}
        if any("reloaded_ns" in e for e in events):
            r["reloaded"] = [(e["reloaded_ns"] - e["commit_ns"]) / 1e6 for e in events]
        per_run.append(r)
        groups.setdefault(base, []).append(r)
        if name.endswith(".1"):
            svg = f"swap-{day}-{base}-rss.svg"
            with open(os.path.join(results_dir, svg), "w") as f:
                f.write(svg_rss(rss, events, t0, f"arbiterd memory, {base} (round 1): changes from t={(events[0]['commit_ns'] - t0) / 1e9:.0f} s"))
            details.append(f"- {base}: memory over round 1: [{svg}]({svg}).")
    order = ["lead-1-poll", "lead-1-reload", "lead-1-rollback", "lead-1-rollback-reload", "lead-1-control", "lead-1-shadow", "rank-200-poll", "rank-200-reload",
             "rank-200-control", "rank-200-tables-reload", "rank-200-tables-control", "rank-200-shadow"]
    for base in sorted(groups, key=lambda b: order.index(b) if b in order else 99):
        rs = groups[base]
        med = lambda f: statistics.median(f(r) for r in rs)
        rate = rate_rank if base.startswith("rank") else rate_lead
        ratios = ", ".join(f"{r['ratio']:.2f}" for r in rs)
        fas = [x for r in rs for x in r["fa"]]
        known = [x for x in fas if x is not None]
        if "control" in base:
            fa_text = "— (the trainer writes another store)"
        elif "shadow" in base:
            fa_text = "— (a 5% shadow from the change on)"
        else:
            fa_text = f"{statistics.median(known):.1f} / {max(known):.1f}" if known else "—"
            if len(known) < len(fas):
                fa_text += f" ({len(fas) - len(known)} of {len(fas)} never served: a newer one was active first)"
        alt = [r["alt"] for r in rs if r["alt"] is not None]
        alt_text = f"{statistics.median(alt):.2f} ({', '.join(f'{x:.2f}' for x in alt)})" if alt else "—"
        inter = [r["inter"] for r in rs if r["inter"] is not None]
        inter_text = f"{statistics.median(inter):.2f} ({', '.join(f'{x:.2f}' for x in inter)})" if inter else "—"
        lines.append(f"| {base} | {rate} | {med(lambda r: pct(r['st'], 50)):.0f} / {med(lambda r: pct(r['st'], 99)):.0f} / "
                     f"{med(lambda r: pct(r['st'], 99.9)):.0f} | {med(lambda r: pct(r['sw'], 50)):.0f} / {med(lambda r: pct(r['sw'], 99)):.0f} / "
                     f"{med(lambda r: pct(r['sw'], 99.9)):.0f} | {med(lambda r: r['ratio']):.2f} ({ratios}) | {alt_text} | {inter_text} | "
                     f"{sum(r['bad'] for r in rs)} | {fa_text} | {min(r['anon'][0] for r in rs):.0f}–{max(r['anon'][1] for r in rs):.0f} |")
        if "reloaded" in rs[0]:
            rl = [x for r in rs for x in r["reloaded"]]
            details.append(f"- {base}: commit → RELOADED answer back at the trainer: median {statistics.median(rl):.1f} ms, max {max(rl):.1f} ms.")
        if any(e["event"] == "rollback" for r in rs for e in r["events"]):
            rb = [x for r in rs for x, e in zip(r["fa"], r["events"]) if e["event"] == "rollback" and x is not None]
            pb = [x for r in rs for x, e in zip(r["fa"], r["events"]) if e["event"] == "publish" and x is not None]
            if rb and pb:
                details.append(f"- {base}: commit → first answer, rollbacks: median {statistics.median(rb):.1f} ms, max {max(rb):.1f} ms "
                               f"(the version rolled back to is still loaded: retained); publishes: median {statistics.median(pb):.1f} ms, "
                               f"max {max(pb):.1f} ms.")
        if alt:
            details.append(f"- {base}: alternating: p99 of the requests scheduled in the {rest_every}-change bursts (to a second after "
                           f"each burst's last commit) against those scheduled in the quiet {rest_ms / 1000:.0f} s after each: median ratio "
                           f"{statistics.median(alt):.2f} (rounds {', '.join(f'{x:.2f}' for x in alt)}; p99 µs "
                           f"{', '.join('%.0f/%.0f' % r['alt_p99'] for r in rs if r['alt_p99'])}; "
                           f"{sum(r['alt_n'][0] for r in rs if r['alt_n'])} and {sum(r['alt_n'][1] for r in rs if r['alt_n'])} requests).")
        if inter:
            details.append(f"- {base}: p99 of the requests scheduled in the 300 ms after each commit against those scheduled between "
                           f"changes (from 400 ms after a commit to when the trainer began the next), interleaved in the same run: "
                           f"median ratio {statistics.median(inter):.2f} (rounds {', '.join(f'{x:.2f}' for x in inter)}; "
                           f"{sum(r['inter_n'][0] for r in rs)} and {sum(r['inter_n'][1] for r in rs)} requests).")
        if "shadow" not in base:
            rested = any("burst" in e for r in rs for e in r["events"])
            details.append(f"- {base}: {sum(r['changes'] for r in rs)} store changes over {sum(r['span'] for r in rs):.0f} s "
                           + ("(the rests between bursts included)." if rested else
                              "(the trainer takes longer than the interval when a version is large)."))
    lines += ["", "The p99 ratio column gives the median, then each round's ratio: p99 during the changes over p99 of the steady "
              "part before them. On this shared machine p99 drifts between the two blocks of a run by more than the bound, so "
              "the alternating column takes the steady p99 beside the swaps instead: over the requests scheduled in the quiet "
              "stretches between bursts (from a second after a burst's last commit to the next burst's first write), against "
              "those scheduled in the bursts — the issue's measure, with blocks of a few seconds interleaved through the run so "
              "that the machine's drift falls on both. "
              "The interleaved column compares, in the same stretch of the same run, the requests scheduled in the 300 ms after "
              "each commit (when the server loads and swaps) with those scheduled between changes (from 400 ms after a commit "
              "until the trainer began writing the next version): the swap's own cost, with the machine's drift cancelled and "
              "the trainer's writes left out of both (— when a trainer's writes fill the interval). The shadow runs compare the "
              "steady part with the part from 2 s after a copy of the active version was set to score 5% of the requests in the "
              "shadow (ONLY=shadow).", ""] + details
    lines += ["", "Per round:", "", "| run | steady p99 µs | during swaps p99 µs | ratio | quiet between bursts p99 µs (alternating ratio) | failed | commit → first answer ms (each change) |",
              "| --- | ---: | ---: | ---: | --- | ---: | --- |"]
    for r in per_run:
        fa = ", ".join("—" if x is None else f"{x:.0f}" for x in r["fa"]) or "—"
        alt = "%.0f (%.2f)" % (r["alt_p99"][1], r["alt"]) if r["alt"] is not None else "—"
        lines.append(f"| {r['name']} | {pct(r['st'], 99):.0f} | {pct(r['sw'], 99):.0f} | {r['ratio']:.2f} | {alt} | {r['bad']} | {fa} |")

    mem = os.path.join(runs_dir, "memory")
    if os.path.exists(os.path.join(mem, "rss.csv")):
        table = int(open(os.path.join(mem, "table_bytes")).read())
        table_mib = table / 2**20
        starts = [(int(b) - int(a)) / 1e6 for a, b in (l.split() for l in open(os.path.join(mem, "startup.txt")) if l.strip())]
        rss = load_rss(os.path.join(mem, "rss.csv"))
        events = load_events(os.path.join(mem, "events.jsonl"))
        trace = load_trace(os.path.join(mem, "trace.csv"))
        first_commit = events[0]["commit_ns"]
        before = [a for t, a, f in rss if t < first_commit - 500_000_000]
        base = statistics.median(before[-10:]) / 1024 if before else float("nan")
        peak = max(a for t, a, f in rss if t >= first_commit - 500_000_000) / 1024
        file_peak = max(f for t, a, f in rss) / 1024
        fa = [x for x in first_answers(trace, events) if x is not None]
        lat, bad = window(trace, trace[0][0] + 1_000_000_000, events[-1]["commit_ns"] + 2_000_000_000)
        svg = f"swap-{day}-memory-1gib-rss.svg"
        with open(os.path.join(os.path.dirname(out), svg), "w") as f:
            f.write(svg_rss(rss, events, rss[0][0], f"arbiterd memory: 5 versions with a {table_mib:.0f} MiB item table swapped in", table_mib))
        lines += ["", f"## Memory: a ranking model with a {table_mib:.0f} MiB item table", "",
                  f"`rank-store` publishes a ranking version of {table // 256:,} items × 64 float32 (the item table, "
                  f"{table_mib:.0f} MiB, one tensor in LMDB, mapped zero-copy), 100k users and three heads of 100 trees. "
                  "`swap-tool publish` then publishes 5 new versions of it 4 s apart (each with a value of the table changed: 1 GiB "
                  "written to the store and read by the server, then `gc --keep 2`) while arbiter-bench sends rank-200 at 100/s over 2 connections. Tensors reach the server mapped, "
                  "not copied: the checksums at load read every page, the version that serves keeps them mapped (RssFile holds "
                  "its table: page cache, shared), and a version let go unmaps its pages — so while a new version is checked "
                  "RssFile holds both tables, then falls back to one.", "",
                  f"- Start-up, process start → first RESULT (store in the page cache): {', '.join(f'{x:.0f}' for x in starts)} ms "
                  f"(median {statistics.median(starts):.0f} ms; bound 500 ms).",
                  f"- RssAnon (private memory) before the first publish: {base:.0f} MiB; highest while the copies were swapped in: "
                  f"{peak:.0f} MiB — growth {peak - base:.0f} MiB, {100 * (peak - base) / table_mib:.1f}% of the table (bound 10%).",
                  f"- RssFile highest: {file_peak:.0f} MiB (mapped store pages: shared page cache, not the server's own).",
                  f"- Commit → first answer from each new version: {', '.join(f'{x:.0f}' for x in fa)} ms; "
                  f"rank-200 over the run p50 {pct(lat, 50):.0f} µs, p99 {pct(lat, 99):.0f} µs, {bad} failed.",
                  f"- Plot: [{svg}]({svg})."]
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


main()
