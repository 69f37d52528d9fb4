"""The benchmark's outputs: latest.json (the record), latest.md (tables and notes) and chart.png.

build_report() turns measured results into the record, adding the ratios to restic and the evaluation of issue
10's Done-means; the writers only format that record. Rows, per workload: CBR through its services on each pool
(the headline), CBR's data-path CLI, restic and borg.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

TOOLS = ("cbr", "restic", "borg")
POOLS = ("xfs", "ext4", "rbd")
STEP_KEYS = ("full_s", "incr_s", "restore_s", "inplace_restore_s", "full_stored_bytes", "incr_added_bytes",
             "peak_rss_mb")
RATIO_KEYS = ("full_s", "incr_s", "restore_s", "full_stored_bytes", "incr_added_bytes")
MB = 1 << 20
RSS_LIMIT_MB = 300.0
OBJECTS_PER_GIB_LIMIT = 64.0
READ_RATIO_LIMIT = 1.1
# A service-path row's own keys beside STEP_KEYS (null when the pool could not be made).
SERVICE_EXTRA = {"restore_ok": None, "full_objects": None, "objects_per_gib": None, "incr_read_bytes": None}
RBD_RESTIC_INCR = 1 / 5  # issue 11: the RBD incremental at least 5x shorter than restic's
XFS_RESTIC_INCR = 1 / 10  # issue 11: the XFS pool's incremental at least 10x shorter than restic's
XFS_READ_LIMIT = 3.0  # issue 11: the XFS pool's incremental reads at most 3x the changed bytes


def service_label(pool: str) -> str:
    return "cbr (service, rbd + rgw)" if pool == "rbd" else f"cbr (service, {pool} pool)"


def empty_result() -> dict:
    return {key: None for key in STEP_KEYS}


def _num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _ratio(a, b) -> float | None:
    if not _num(a) or not _num(b) or b == 0:
        return None
    return round(a / b, 4)


def rows(entry: dict) -> dict[str, dict]:
    """The workload's rows by label: the service path on each pool, the data-path CLI, restic, borg."""
    out = {}
    for pool in POOLS:
        if pool in (entry.get("service") or {}):
            out[service_label(pool)] = entry["service"][pool]
    results = entry.get("results") or {}
    out["cbr (data path CLI)"] = results.get("cbr") or {}
    out["restic"] = results.get("restic") or {}
    out["borg"] = results.get("borg") or {}
    return out


def ratios_to_restic(entry: dict) -> dict[str, dict]:
    restic = (entry.get("results") or {}).get("restic") or {}
    return {label: {key: _ratio(row.get(key), restic.get(key)) for key in RATIO_KEYS}
            for label, row in rows(entry).items() if label != "restic"}


# --- targets: issue 10's Done-means -------------------------------------------------------------------------------

def _target(measure: str, target: str, value, met: bool, detail: str, unit: str = "ratio") -> dict:
    return {"measure": measure, "target": target, "value": value, "unit": unit, "met": bool(met), "detail": detail}


def _vs_restic(measure: str, target: str, row: dict, restic: dict, key: str, limit: float,
               label: str = "cbr") -> dict:
    value = _ratio(row.get(key), restic.get(key))
    met = value is not None and value <= limit
    detail = f"{label} {_fmt_value(key, row.get(key))} vs restic {_fmt_value(key, restic.get(key))}"
    if key == "restore_s" and row.get("restore_ok") is False:  # wrong bytes meet no time target
        met, detail = False, detail + " (checksum mismatch)"
    if row.get("error"):
        detail += f" ({row['error'][:120]})"
    return _target(measure, target, value, met, detail)


def _full_pairs_target(row: dict) -> dict:
    """The full backup's ratio as the median of the alternating fresh pairs (service_path.measure's full_pairs)."""
    pairs = [p for p in row.get("full_pairs") or [] if _num(p.get("cbr_s")) and _num(p.get("peer_s"))
             and p["peer_s"] > 0]
    ratios = sorted(p["cbr_s"] / p["peer_s"] for p in pairs)
    value = round(statistics.median(ratios), 4) if ratios else None

    def spread(values: list[float]) -> str:
        return f"{min(values):.2f}-{max(values):.2f}"
    detail = (f"{len(pairs)} pairs: ratios {spread(ratios)}, service {spread([p['cbr_s'] for p in pairs])} s, "
              f"restic {spread([p['peer_s'] for p in pairs])} s") if pairs else "not measured"
    return _target("service full backup, median of alternating fresh pairs (standard, xfs pool)",
                   "at most 1/3 of restic's time", value, value is not None and value <= 1 / 3, detail)


def evaluate_targets(workloads: dict, s3: dict | None) -> list[dict]:
    std = workloads.get("standard") or {}
    std_restic = (std.get("results") or {}).get("restic") or {}
    xfs = (std.get("service") or {}).get("xfs") or {}
    cli = (std.get("results") or {}).get("cbr") or {}
    targets = [
        _vs_restic("service full backup (standard, xfs pool)", "at most 1/3 of restic's time", xfs, std_restic,
                   "full_s", 1 / 3, "service"),
        _full_pairs_target(xfs),
        _vs_restic("service incremental (standard, xfs pool)", "at most 1/2 of restic's time", xfs, std_restic,
                   "incr_s", 1 / 2, "service"),
        _vs_restic("service restore to a new disk (standard, xfs pool)", "at most 1/2 of restic's time", xfs,
                   std_restic, "restore_s", 1 / 2, "service"),
    ]
    for step, key in (("full backup", "full_s"), ("incremental", "incr_s"), ("restore", "restore_s")):
        value = _ratio(xfs.get(key), cli.get(key))
        targets.append(_target(f"data path within 20% of the service path: {step} (standard, xfs pool)",
                               "service / data path at most 1.2", value, value is not None and value <= 1.2,
                               f"service {_fmt_value(key, xfs.get(key))} vs data path {_fmt_value(key, cli.get(key))}"))
    for name in ("standard", "usr"):
        entry = workloads.get(name) or {}
        restic = (entry.get("results") or {}).get("restic") or {}
        row = (entry.get("service") or {}).get("xfs") or {}
        targets.append(_vs_restic(f"stored after the full ({name}, service, xfs pool)", "no more than restic's",
                                  row, restic, "full_stored_bytes", 1.0))
        targets.append(_vs_restic(f"added by the incremental ({name}, service, xfs pool)", "at most 1/4 of restic's",
                                  row, restic, "incr_added_bytes", 1 / 4))
    peaks = [(f"{name} {pool}", row.get("peak_rss_mb"))
             for name, entry in workloads.items() for pool, row in (entry.get("service") or {}).items()
             if _num(row.get("peak_rss_mb"))]
    peak = max((v for _, v in peaks), default=None)
    targets.append(_target("worker peak RSS (service path, all runs)", f"at most {RSS_LIMIT_MB:.0f} MB", peak,
                           peak is not None and peak <= RSS_LIMIT_MB,
                           ", ".join(f"{k} {v:.0f} MB" for k, v in peaks) or "not measured", "MB"))
    fs = [(f"{name} {pool}", row.get("objects_per_gib"))
          for name, entry in workloads.items() for pool, row in (entry.get("service") or {}).items()
          if _num(row.get("objects_per_gib"))]
    worst = max((v for _, v in fs), default=None)
    targets.append(_target("store objects per GiB stored after the full (file-system store, service path)",
                           f"at most {OBJECTS_PER_GIB_LIMIT:.0f}", worst,
                           worst is not None and worst <= OBJECTS_PER_GIB_LIMIT,
                           ", ".join(f"{k} {v:.1f}" for k, v in fs) or "not measured", "per GiB"))
    s3 = s3 or {}
    value = s3.get("objects_per_gib")
    detail = f"{s3.get('full_objects')} objects, {_fmt_value('full_stored_bytes', s3.get('full_stored_bytes'))}"
    targets.append(_target("store objects per GiB stored after the full (S3 store, data path)",
                           f"at most {OBJECTS_PER_GIB_LIMIT:.0f}", value,
                           _num(value) and value <= OBJECTS_PER_GIB_LIMIT,
                           detail + (f" ({s3['error'][:120]})" if s3.get("error") else ""), "per GiB"))
    for label, source in (("file-system store, data path CLI, standard", cli), ("S3 store, data path", s3)):
        value = source.get("restore_read_ratio")
        targets.append(_target(f"restore reads vs bytes needed ({label})", f"at most {READ_RATIO_LIMIT}x", value,
                               _num(value) and value <= READ_RATIO_LIMIT,
                               "store bytes read / chunk bytes the restore needs"))
    return targets + issue11_targets(workloads)


def issue11_targets(workloads: dict) -> list[dict]:
    """Issue 11's Done-means on the standard workload: reads against what changed, incrementals against restic's
    (restic backs up the workload's file: the same bytes as the RBD image, which is written from it)."""
    std = workloads.get("standard") or {}
    restic = (std.get("results") or {}).get("restic") or {}
    service = std.get("service") or {}
    xfs, rbd = service.get("xfs") or {}, service.get("rbd") or {}
    change = (std.get("workload") or {}).get("change") or {}
    changed = change.get("blocks", 0) * change.get("block_bytes", 0) or None
    value = _ratio(xfs.get("incr_read_bytes"), changed)
    out = [_target("incremental reads vs changed bytes (standard, service, xfs pool)",
                   f"at most {XFS_READ_LIMIT:.0f}x", value, value is not None and value <= XFS_READ_LIMIT,
                   f"read {_fmt_value('x_bytes', xfs.get('incr_read_bytes'))}, changed "
                   f"{_fmt_value('x_bytes', changed)}"),
           _vs_restic("service incremental (standard, xfs pool), issue 11", "at most 1/10 of restic's time", xfs,
                      restic, "incr_s", XFS_RESTIC_INCR, "service")]
    value = _ratio(rbd.get("incr_read_bytes"), rbd.get("diff_iterate_block_bytes"))
    per_changed = _ratio(rbd.get("incr_read_bytes"), changed)
    detail = (f"read {_fmt_value('x_bytes', rbd.get('incr_read_bytes'))}, diff_iterate "
              f"{_fmt_value('x_bytes', rbd.get('diff_iterate_block_bytes'))} in blocks; changed "
              f"{_fmt_value('x_bytes', changed)} (read / changed {_fmt(per_changed, 2)}x)")
    out.append(_target("incremental reads vs diff_iterate, rounded to blocks (standard, service, rbd)",
                       "at most 1x", value, value is not None and value <= 1.0,
                       detail + (f" ({rbd['error'][:120]})" if rbd.get("error") else "")))
    versus = _vs_restic("service incremental (standard, rbd + rgw)", "at most 1/5 of restic's time (same data "
                        "as a file)", rbd, restic, "incr_s", RBD_RESTIC_INCR, "service")
    if rbd.get("image_is_workload_file") is False:  # then restic did not back up the same data
        versus.update(met=False, detail=versus["detail"] + " (the image is not the workload's file)")
    out.append(versus)
    return out


def build_report(machine: dict, workloads: dict, chunker: dict | None = None, notes: list[str] | None = None,
                 s3: dict | None = None) -> dict:
    full: dict = {}
    for name, entry in (workloads or {}).items():
        results = {}
        for tool in TOOLS:
            merged = empty_result()
            merged.update((entry.get("results") or {}).get(tool) or {})
            results[tool] = merged
        service = {pool: {**empty_result(), **SERVICE_EXTRA, **row}
                   for pool, row in (entry.get("service") or {}).items()}
        e = {"workload": dict(entry.get("workload") or {}), "results": results, "service": service}
        e["ratios_to_restic"] = ratios_to_restic(e)
        full[name] = e
    chunker = {"cbr_mb_s": None, "pyfastcdc_mb_s": None, **(chunker or {})}
    return {
        "machine": machine,
        "workloads": full,
        "s3": dict(s3 or {}),
        "chunker": chunker,
        "targets": evaluate_targets(full, s3),
        "notes": list(notes or []),
    }


# --- writers ----------------------------------------------------------------------------------------------------

def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False, default=str) + "\n")


def _fmt(value, digits: int = 1) -> str:
    if not _num(value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_value(key: str, value) -> str:
    if not _num(value):
        return "–"
    if key.endswith("_bytes"):
        return f"{value / MB:.1f} MiB"
    if key.endswith("_s"):
        return f"{value:.2f} s"
    if key.endswith("_mb"):
        return f"{value:.0f} MB"
    return str(value)


def _with_ratio(text: str, ratio) -> str:
    return text if ratio is None or text == "–" else f"{text} ({ratio:.2f}×)"


HEADLINE = (("full (s)", "full_s", lambda v: f"{v:.2f}"),
            ("incremental (s)", "incr_s", lambda v: f"{v:.2f}"),
            ("restore to a new disk (s)", "restore_s", lambda v: f"{v:.2f}"),
            ("stored after full (MiB)", "full_stored_bytes", lambda v: f"{v / MB:.1f}"),
            ("added by incr (MiB)", "incr_added_bytes", lambda v: f"{v / MB:.1f}"))


def _cells(row: dict, ratio: dict) -> list[str]:
    cells = []
    for _, key, fmt in HEADLINE:
        value = row.get(key)
        cells.append(_with_ratio(fmt(value) if _num(value) else "–", ratio.get(key)))
    return cells


def _check(row: dict) -> str:
    ok = row.get("restore_ok")
    return "–" if ok is None else ("ok" if ok else "MISMATCH")


def service_table(entry: dict) -> list[str]:
    """The headline: CBR through its services on each pool, beside restic and borg (ratio to restic in ())."""
    ratio = entry["ratios_to_restic"]
    lines = ["| | " + " | ".join(h for h, _, _ in HEADLINE) + " | peak RSS (MB) | objects / GiB | incr read (MiB) "
             "| diff_iterate (MiB, 128 KiB blocks; read / it) | restore |",
             "|---|" + "---:|" * (len(HEADLINE) + 4) + "---|"]
    for label, row in rows(entry).items():
        if label == "cbr (data path CLI)":
            continue
        if row.get("error") and not _num(row.get("full_s")):
            lines.append(f"| {label} | " + " | ".join("–" for _ in HEADLINE) + f" | – | – | – | – | "
                         f"not measured: {row['error'][:160]} |")
            continue
        read = row.get("incr_read_bytes")
        lines.append(f"| {label} | " + " | ".join(_cells(row, ratio.get(label, {}))) +
                     f" | {_fmt(row.get('peak_rss_mb'), 0)} | {_fmt(row.get('objects_per_gib'))} | "
                     f"{_fmt(read / MB) if _num(read) else '–'} | {diff_cell(row)} | {_check(row)} |")
    return lines


def diff_cell(row: dict) -> str:
    """diff_iterate's changed bytes in blocks and the incremental's read bytes over them (RBD rows only)."""
    blocks = row.get("diff_iterate_block_bytes")
    if not _num(blocks):
        return "–"
    ratio = _ratio(row.get("incr_read_bytes"), blocks)
    return f"{blocks / MB:.1f}" + (f" ({ratio:.2f}×)" if ratio is not None else "")


def data_path_table(entry: dict) -> list[str]:
    ratio = entry["ratios_to_restic"]
    lines = ["| | " + " | ".join(h for h, _, _ in HEADLINE) + " | in-place restore (s) | peak RSS (MB) "
             "| objects / GiB | restore |", "|---|" + "---:|" * (len(HEADLINE) + 3) + "---|"]
    for label in ("cbr (data path CLI)", "restic", "borg"):
        row = rows(entry)[label]
        inplace = row.get("inplace_restore_ok")
        check = _check(row) + ("" if inplace is None else " / in place " + ("ok" if inplace else "MISMATCH"))
        if row.get("error"):
            check += f" ({row['error'][:160]})"
        lines.append(f"| {label} | " + " | ".join(_cells(row, ratio.get(label, {}))) +
                     f" | {_fmt(row.get('inplace_restore_s'), 2)} | {_fmt(row.get('peak_rss_mb'), 0)} | "
                     f"{_fmt(row.get('objects_per_gib'))} | {check} |")
    return lines


def workload_line(w: dict) -> str:
    if w.get("error"):
        return f"**{w.get('name')}**: not built: {w['error']}"
    if w.get("name") == "usr":
        change = w.get("change") or {}
        kinds = ", ".join(f"{k} {v['ops']} ({v['bytes'] / MB:.1f} MiB)" for k, v in (change.get("kinds") or {}).items())
        return (f"**usr**: {w.get('size_bytes', 0) / (1 << 30):.2f} GiB ext4 image holding {w.get('files')} files "
                f"from /usr ({w.get('file_bytes', 0) / 1e9:.2f} GB, sorted paths {w.get('first_file')} .. "
                f"{w.get('last_file')}); change step (seed {change.get('seed')}, ~{change.get('percent')}% of the "
                f"file data): {kinds}; {change.get('delta_bytes', 0) / MB:.1f} MiB of image blocks differ.")
    shares = w.get("shares", {})
    return (f"**standard**: {w.get('size_bytes', 0) / (1 << 30):.2f} GiB raw disk, seed {w.get('seed')}, 1 MiB "
            f"extents: {shares.get('hole', 0):.0%} holes, {shares.get('text', 0):.0%} text-like, "
            f"{shares.get('random', 0):.0%} random; change step: {w.get('change', {}).get('blocks', '?')} of the "
            f"64 KiB blocks ({w.get('change', {}).get('percent', '?')}%) rewritten with random bytes.")


def s3_lines(s3: dict) -> list[str]:
    if not s3:
        return []
    lines = ["## S3 store (data path)", ""]
    if s3.get("error"):
        return lines + [f"Not measured: {s3['error']}", ""]
    lines.append(f"{s3.get('server')} at {s3.get('endpoint')}, {s3.get('workload')} workload: "
                 f"{s3.get('full_objects')} objects and {_fmt_value('full_stored_bytes', s3.get('full_stored_bytes'))}"
                 f" after the full ({_fmt(s3.get('objects_per_gib'))} objects per GiB stored); restore read "
                 f"{_fmt_value('x_bytes', s3.get('restore_read_bytes'))} for "
                 f"{_fmt_value('x_bytes', s3.get('restore_needed_bytes'))} needed "
                 f"({_fmt(s3.get('restore_read_ratio'), 3)}×), checksum "
                 f"{'ok' if s3.get('restore_ok') else 'MISMATCH'}.")
    lines += ["", "| requests per GiB stored | PUT | GET | LIST | HEAD | DELETE |", "|---|---:|---:|---:|---:|---:|"]
    for step in ("full", "incr", "restore"):
        per = (s3.get("requests_per_gib") or {}).get(step) or {}
        lines.append(f"| {step} | " + " | ".join(_fmt(per.get(k, 0.0)) for k in ("PUT", "GET", "LIST", "HEAD",
                                                                                   "DELETE")) + " |")
    return lines + [""]


def machine_line(machine: dict) -> str:
    parts = [f"{machine.get('cpu_count', '?')} CPUs ({machine.get('cpu_model', '?')})",
             f"{machine.get('memory_gib', '?')} GiB RAM",
             f"Linux {machine.get('kernel', '?')}",
             f"Python {machine.get('python', '?')}",
             f"work folder on {machine.get('work_fs', '?')}"]
    if machine.get("loadavg_start") is not None:
        parts.append(f"load average {machine['loadavg_start'][0]} at start, "
                     f"{(machine.get('loadavg_end') or ['?'])[0]} at end")
    tools = machine.get("tools") or {}
    parts += [str(v) for v in tools.values() if v]
    return ", ".join(parts)


def _shown(t: dict) -> str:
    value = t.get("value")
    if not _num(value):
        return "–"
    return {"MB": f"{value:.0f} MB", "per GiB": f"{value:.1f}"}.get(t.get("unit"), f"{value:.3f}×")


def markdown(report: dict) -> str:
    machine = report["machine"]
    workloads = report["workloads"]
    lines = ["# CBR benchmark", "", f"**Machine:** {machine_line(machine)}. Run {machine.get('date', '')}.", ""]
    for entry in workloads.values():
        lines += [workload_line(entry["workload"]), ""]
    lines += ["## Through the service (headline)", "",
              "Encrypted vault (the default), embedded stack: gRPC call to the task's success (backup `available`; "
              "new disk synced), one worker. In () the ratio to restic in the same run.", ""]
    for name, entry in workloads.items():
        lines += [f"### {name}", ""] + service_table(entry) + [""]
    lines += ["## Data path (command lines)", "", "Each tool's own command line, timed from outside.", ""]
    for name, entry in workloads.items():
        lines += [f"### {name}", ""] + data_path_table(entry) + [""]
    lines += s3_lines(report.get("s3") or {})
    lines += ["## Targets (issue 10)", "", "| measure | target | value | met |", "|---|---|---:|---|"]
    for t in report["targets"]:
        lines.append(f"| {t['measure']} | {t['target']} | {_shown(t)} ({t.get('detail', '')}) | "
                     f"{'met' if t['met'] else 'not met'} |")
    met = sum(1 for t in report["targets"] if t["met"])
    lines += ["", f"{met} of {len(report['targets'])} targets met.", ""]
    chunker = report.get("chunker") or {}
    if _num(chunker.get("cbr_mb_s")) or _num(chunker.get("pyfastcdc_mb_s")):
        lines += [f"**Chunker** ({chunker.get('buffer_bytes', 0) / MB:.0f} MiB buffer): cbr "
                  f"{_fmt(chunker.get('cbr_mb_s'))} MB/s, pyfastcdc {_fmt(chunker.get('pyfastcdc_mb_s'))} MB/s.", ""]
    notes = list(report.get("notes") or [])
    for name, entry in workloads.items():
        for tool in TOOLS:
            r = entry["results"].get(tool, {})
            if r.get("error"):
                notes.append(f"{name}, {tool}: {r['error']}")
    first = next(iter(workloads.values()), {"results": {}})
    for tool in TOOLS:
        for key, value in (first["results"].get(tool, {}).get("settings") or {}).items():
            notes.append(f"{tool} {key}: {value}")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def write_markdown(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(report))


def write_chart(report: dict, path: Path) -> None:
    """One row of panels per workload: times per step, stored bytes, peak RSS; one bar per row of the tables."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = report["workloads"] or {"(none)": {"service": {}, "results": {}}}
    panels = (
        ("time (s)", (("full", "full_s"), ("incremental", "incr_s"), ("restore", "restore_s")), 1.0),
        ("stored (MiB)", (("after full", "full_stored_bytes"), ("added by incr", "incr_added_bytes")), MB),
        ("peak RSS (MB)", (("backup", "peak_rss_mb"),), 1.0),
    )
    labels = [service_label(p) for p in POOLS] + ["cbr (data path CLI)", "restic", "borg"]
    colors = dict(zip(labels, ("#1f5f99", "#6aa6d6", "#8c6bb1", "#9ecae1", "#e08a2c", "#5aa05a")))
    fig, axes = plt.subplots(len(workloads), len(panels), figsize=(15, 4.6 * len(workloads)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2, 1.3]})
    width = 0.8 / len(labels)
    for r, (name, entry) in enumerate(workloads.items()):
        by_label = rows(entry) if entry.get("results") is not None else {}
        for ax, (title, steps, scale) in zip(axes[r], panels):
            for t, label in enumerate(labels):
                row = by_label.get(label) or {}
                xs = [s + (t - (len(labels) - 1) / 2) * width for s in range(len(steps))]
                heights = [row.get(key) / scale if _num(row.get(key)) else 0 for _, key in steps]
                ax.bar(xs, heights, width, label=label, color=colors[label])
            ax.set_xticks(range(len(steps)))
            ax.set_xticklabels([label for label, _ in steps])
            ax.set_title(f"{name}: {title}")
            ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("CBR (service path and data path) vs restic vs borg, same machine, same run")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_all(report: dict, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "latest.json", "markdown": out_dir / "latest.md", "chart": out_dir / "chart.png"}
    write_json(report, paths["json"])
    write_markdown(report, paths["markdown"])
    write_chart(report, paths["chart"])
    return paths
