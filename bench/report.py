"""The benchmark's outputs: latest.json (the record), latest.md (tables and notes) and chart.png.

build_report() turns measured results into the record, adding the ratios and the evaluation of the issue's
targets; the writers only format that record.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

TOOLS = ("cbr", "restic", "borg")
STEP_KEYS = ("full_s", "incr_s", "restore_s", "inplace_restore_s", "full_stored_bytes", "incr_added_bytes",
             "peak_rss_mb")
MB = 1 << 20

# (measure, target text, what is compared, limit): a ratio cbr/restic of a result key, the absolute peak RSS in
# MB, or the chunker's throughput ratio (which must be at least the limit).
TARGETS = (
    ("full backup time", "at most 1/4 of restic's", "full_s", 1 / 4),
    ("incremental backup time", "at most 1/5 of restic's", "incr_s", 1 / 5),
    ("bytes added by the incremental", "at most 1/4 of restic's", "incr_added_bytes", 1 / 4),
    ("restore to a new disk", "at most 1/2 of restic's time", "restore_s", 1 / 2),
    ("stored bytes after the full backup", "no more than restic's", "full_stored_bytes", 1.0),
    ("peak RSS of the backup process", "at most 300 MB", "peak_rss_mb", 300.0),
    ("C chunker throughput", "at least pyfastcdc's", "chunker", 1.0),
)


def empty_result() -> dict:
    return {key: None for key in STEP_KEYS}


def _ratio(a, b) -> float | None:
    if a is None or b is None or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return None
    if b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 4)


def ratios(results: dict, chunker: dict) -> dict:
    out: dict = {}
    for num, den in (("cbr", "restic"), ("cbr", "borg"), ("borg", "restic")):
        a, b = results.get(num) or {}, results.get(den) or {}
        out[f"{num}_to_{den}"] = {key: _ratio(a.get(key), b.get(key)) for key in STEP_KEYS}
    out["chunker_cbr_to_pyfastcdc"] = _ratio((chunker or {}).get("cbr_mb_s"), (chunker or {}).get("pyfastcdc_mb_s"))
    return out


def evaluate_targets(results: dict, chunker: dict) -> list[dict]:
    cbr = results.get("cbr") or {}
    restic = results.get("restic") or {}
    rel = ratios(results, chunker)
    targets = []
    for measure, target, key, limit in TARGETS:
        entry = {"measure": measure, "target": target}
        if key == "chunker":
            value = rel["chunker_cbr_to_pyfastcdc"]
            met = value is not None and value >= limit
            entry["detail"] = f"cbr {_fmt((chunker or {}).get('cbr_mb_s'))} MB/s vs pyfastcdc " \
                              f"{_fmt((chunker or {}).get('pyfastcdc_mb_s'))} MB/s"
        elif key == "peak_rss_mb":
            value = cbr.get(key)
            met = value is not None and value <= limit
            entry["detail"] = f"cbr {_fmt(value)} MB (restic {_fmt(restic.get(key))} MB)"
        else:
            value = rel["cbr_to_restic"][key]
            met = value is not None and value <= limit
            entry["detail"] = f"cbr {_fmt_value(key, cbr.get(key))} vs restic {_fmt_value(key, restic.get(key))}"
        # A restore that does not give back the right bytes meets no time target.
        if key == "restore_s" and cbr.get("restore_ok") is False:
            met = False
            entry["detail"] += " (checksum mismatch)"
        entry["value"] = value
        entry["met"] = bool(met)
        targets.append(entry)
    return targets


def build_report(machine: dict, workload: dict, results: dict, chunker: dict, notes: list[str] | None = None,
                 service: dict | None = None) -> dict:
    full_results = {}
    for tool in TOOLS:
        merged = empty_result()
        merged.update(results.get(tool) or {})
        full_results[tool] = merged
    chunker = {"cbr_mb_s": None, "pyfastcdc_mb_s": None, **(chunker or {})}
    # Notes on the run's conditions travel with the workload; service_path is CBR through its services.
    workload = {**(workload or {}), "notes": list(notes or [])}
    return {
        "machine": machine,
        "workload": workload,
        "results": full_results,
        "chunker": chunker,
        "ratios": ratios(full_results, chunker),
        "targets": evaluate_targets(full_results, chunker),
        "service_path": dict(service or {}),
    }


# --- writers ----------------------------------------------------------------------------------------------------

def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False, default=str) + "\n")


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if not math.isnan(value) else "–"
    return str(value)


def _fmt_value(key: str, value) -> str:
    if value is None:
        return "–"
    if key.endswith("_bytes"):
        return f"{value / MB:.1f} MiB"
    if key.endswith("_s"):
        return f"{value:.2f} s"
    if key.endswith("_mb"):
        return f"{value:.0f} MB"
    return str(value)


ROWS = (
    ("full backup (s)", "full_s", lambda v: f"{v:.2f}"),
    ("incremental backup (s)", "incr_s", lambda v: f"{v:.2f}"),
    ("restore to a new disk (s)", "restore_s", lambda v: f"{v:.2f}"),
    ("in-place restore of the full (s)", "inplace_restore_s", lambda v: f"{v:.2f}"),
    ("stored after the full (MiB)", "full_stored_bytes", lambda v: f"{v / MB:.1f}"),
    ("added by the incremental (MiB)", "incr_added_bytes", lambda v: f"{v / MB:.1f}"),
    ("peak RSS of backup (MB)", "peak_rss_mb", lambda v: f"{v:.0f}"),
)


def service_lines(service: dict, cli: dict) -> list[str]:
    """CBR through its services (CreateCheckpoint to available) next to the data path's own figures."""
    if not service:
        return []
    if service.get("error"):
        return ["## Through the service", "", f"Not measured: {service['error']}", ""]
    lines = ["## Through the service", "",
             "Embedded stack, gRPC call to `available` (as GetTask sees it), one worker; the data path's own "
             "figure (the CLI above) beside it.", "",
             "| step | service path (s) | data path (s) | service / data path |", "|---|---:|---:|---:|"]
    for label, key in (("full backup", "full_s"), ("incremental", "incr_s"), ("new disk from the backup",
                                                                               "restore_s")):
        mine, base = service.get(key), cli.get(key)
        ratio = f"{mine / base:.2f}" if mine and base else "–"
        lines.append(f"| {label} | {_fmt(mine, 2)} | {_fmt(base, 2)} | {ratio} |")
    lines += ["", f"Restore checksum: {'matches' if service.get('restore_ok') else 'DIFFERS'}.", ""]
    return lines


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


def markdown(report: dict) -> str:
    machine, workload, results = report["machine"], report["workload"], report["results"]
    rel = report["ratios"]["cbr_to_restic"]
    lines = ["# CBR benchmark", ""]
    lines.append(f"**Machine:** {machine_line(machine)}. Run {machine.get('date', '')}.")
    lines.append("")
    if workload:
        shares = workload.get("shares", {})
        lines.append(f"**Workload:** {workload.get('size_bytes', 0) / (1 << 30):.2f} GiB raw disk, seed "
                     f"{workload.get('seed')}, 1 MiB extents: {shares.get('hole', 0):.0%} holes, "
                     f"{shares.get('text', 0):.0%} text-like, {shares.get('random', 0):.0%} random; change step: "
                     f"{workload.get('change', {}).get('blocks', '?')} of the 64 KiB blocks "
                     f"({workload.get('change', {}).get('percent', '?')}%) rewritten with random bytes. "
                     f"Page cache: {workload.get('cache', '?')}.")
        lines.append("")
    lines.append("| measure | " + " | ".join(TOOLS) + " | cbr / restic |")
    lines.append("|---|" + "---:|" * (len(TOOLS) + 1))
    for label, key, fmt in ROWS:
        cells = []
        for tool in TOOLS:
            value = results.get(tool, {}).get(key)
            cells.append("–" if value is None else fmt(value))
        ratio = rel.get(key)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'–' if ratio is None else f'{ratio:.3f}'} |")
    checks = []
    for tool in TOOLS:
        r = results.get(tool, {})
        ok = r.get("restore_ok")
        inplace = r.get("inplace_restore_ok")
        text = "–" if ok is None else ("ok" if ok else "MISMATCH")
        if inplace is not None:
            text += " / in place " + ("ok" if inplace else "MISMATCH")
        checks.append(text)
    lines.append("| restore checksum | " + " | ".join(checks) + " | |")
    lines.append("")
    chunker = report["chunker"]
    lines.append(f"**Chunker** ({chunker.get('buffer_bytes', 0) / MB:.0f} MiB buffer, min/avg/max "
                 f"{chunker.get('min_size', 0) // 1024}/{chunker.get('avg_size', 0) // 1024}/"
                 f"{chunker.get('max_size', 0) // 1024} KiB, best of {chunker.get('rounds', '?')}): cbr "
                 f"{_fmt(chunker.get('cbr_mb_s'))} MB/s, pyfastcdc {_fmt(chunker.get('pyfastcdc_mb_s'))} MB/s.")
    lines.append("")
    lines += ["## Targets", "", "| measure | target | value | met |", "|---|---|---:|---|"]
    for t in report["targets"]:
        value = t.get("value")
        shown = "–" if value is None else (f"{value:.0f} MB" if t["measure"].startswith("peak RSS")
                                           else f"{value:.3f}×")
        lines.append(f"| {t['measure']} | {t['target']} | {shown} ({t.get('detail', '')}) | "
                     f"{'met' if t['met'] else 'not met'} |")
    lines.append("")
    met = sum(1 for t in report["targets"] if t["met"])
    lines.append(f"{met} of {len(report['targets'])} targets met.")
    lines.append("")
    lines += service_lines(report.get("service_path") or {}, results.get("cbr") or {})
    notes = list((workload or {}).get("notes") or [])
    for tool in TOOLS:
        r = results.get(tool, {})
        if r.get("error"):
            notes.append(f"{tool}: {r['error']}")
        for key, value in (r.get("settings") or {}).items():
            notes.append(f"{tool} {key}: {value}")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def write_markdown(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(report))


def write_chart(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    panels = (
        ("time (s)", (("full", "full_s"), ("incremental", "incr_s"), ("restore", "restore_s"),
                      ("in-place restore", "inplace_restore_s")), 1.0),
        ("stored (MiB)", (("after full", "full_stored_bytes"), ("added by incr", "incr_added_bytes")), MB),
        ("peak RSS of backup (MB)", (("backup", "peak_rss_mb"),), 1.0),
    )
    colors = {"cbr": "#2b7bba", "restic": "#e08a2c", "borg": "#5aa05a"}
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.8), gridspec_kw={"width_ratios": [4, 2, 1.3]})
    width = 0.8 / len(TOOLS)
    for ax, (title, steps, scale) in zip(axes, panels):
        for t, tool in enumerate(TOOLS):
            xs, heights = [], []
            for s, (_, key) in enumerate(steps):
                value = results.get(tool, {}).get(key)
                xs.append(s + (t - (len(TOOLS) - 1) / 2) * width)
                heights.append(0 if value is None else value / scale)
            bars = ax.bar(xs, heights, width, label=tool, color=colors.get(tool))
            for bar, (_, key) in zip(bars, steps):
                if results.get(tool, {}).get(key) is None:
                    ax.annotate("n/a", (bar.get_x() + bar.get_width() / 2, 0), ha="center", va="bottom",
                                fontsize=7, color="grey")
        ax.set_xticks(range(len(steps)))
        ax.set_xticklabels([label for label, _ in steps])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    size = report.get("workload", {}).get("size_bytes", 0) / (1 << 30)
    fig.suptitle(f"CBR vs restic vs borg, {size:.2f} GiB disk, same machine, same run")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(report: dict, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "latest.json", "markdown": out_dir / "latest.md", "chart": out_dir / "chart.png"}
    write_json(report, paths["json"])
    write_markdown(report, paths["markdown"])
    write_chart(report, paths["chart"])
    return paths
