"""Turn measured cells into the project's checks, a Markdown table, a JSON file and a chart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from benchlib.scenarios import BY_KEY

Cells = dict[str, dict[str, dict[str, Any]]]  # scenario key -> target name -> aggregate

FG, FG_PG, PT, LL, DIRECT = (
    "faregate-embedded",
    "faregate-pg-redis",
    "passthrough",
    "litellm",
    "direct",
)
PEERS = {LL: "LiteLLM", "portkey": "Portkey", "tensorzero": "TensorZero"}


def _get(cells: Cells, scenario: str, target: str, key: str) -> float | None:
    cell = cells.get(scenario, {}).get(target)
    if not cell or key not in cell:
        return None
    value = cell[key]
    return float(value["median"] if isinstance(value, dict) else value)


def add_latency_deltas(cells: Cells) -> None:
    """Latency each target adds over going direct to the mock, cell by cell."""
    for per_target in cells.values():
        direct = per_target.get(DIRECT)
        if not direct:
            continue
        for cell in per_target.values():
            cell["added_p50_ms"] = round(cell["p50_ms"]["median"] - direct["p50_ms"]["median"], 3)
            cell["added_p99_ms"] = round(cell["p99_ms"]["median"] - direct["p99_ms"]["median"], 3)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b not in (None, 0) else None


def checks(cells: Cells, dropped: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """The ratios the project targets, each with its figure and whether it is met. A target
    that ran without part of its configuration (`dropped`) gets no verdict."""
    out: list[dict[str, Any]] = []
    dropped = dropped or {}

    def add(name: str, value: float | None, op: str, limit: float, unit: str, basis: str) -> None:
        met = (
            None
            if value is None
            else (value <= limit if op == "<=" else value >= limit if op == ">=" else value < limit)
        )
        target = FG_PG if "PostgreSQL" in name else FG
        if dropped.get(target) and value is not None:
            met = None
            basis += f"; no verdict: ran without {', '.join(dropped[target])}"
        out.append(
            {
                "check": name,
                "value": value,
                "target": f"{op} {limit}{unit}",
                "met": met,
                "basis": basis,
            }
        )

    for scenario, kind in (("chat-c32", "non-streaming"), ("stream-c32", "streaming")):
        add(
            f"faregate embedded CPU per request / pass-through, {kind}",
            _ratio(
                _get(cells, scenario, FG, "cpu_ms_per_req"),
                _get(cells, scenario, PT, "cpu_ms_per_req"),
            ),
            "<=",
            2,
            "x",
            scenario,
        )
    add(
        "faregate embedded req/s / LiteLLM req/s, same core",
        _ratio(_get(cells, "chat-c32", FG, "rps"), _get(cells, "chat-c32", LL, "rps")),
        ">=",
        25,
        "x",
        "chat-c32, measured req/s",
    )
    add(
        "LiteLLM CPU per request / faregate embedded (capacity on one core)",
        _ratio(
            _get(cells, "chat-c32", LL, "cpu_ms_per_req"),
            _get(cells, "chat-c32", FG, "cpu_ms_per_req"),
        ),
        ">=",
        25,
        "x",
        "chat-c32, CPU per request",
    )
    add(
        "faregate embedded added p50 at c=1",
        _get(cells, "chat-c1", FG, "added_p50_ms"),
        "<",
        0.5,
        " ms",
        "chat-c1",
    )
    add(
        "faregate embedded added p99 at c=1",
        _get(cells, "chat-c1", FG, "added_p99_ms"),
        "<",
        1.5,
        " ms",
        "chat-c1",
    )
    for scenario, kind in (("chat-c32", "non-streaming"), ("stream-c32", "streaming")):
        add(
            f"faregate PostgreSQL+Redis CPU per request / pass-through, {kind}",
            _ratio(
                _get(cells, scenario, FG_PG, "cpu_ms_per_req"),
                _get(cells, scenario, PT, "cpu_ms_per_req"),
            ),
            "<=",
            3,
            "x",
            scenario,
        )
    return out


def _fmt(value: dict[str, float] | float | None, digits: int = 2, show_range: bool = True) -> str:
    if value is None:
        return "-"
    if not isinstance(value, dict):
        return f"{value:,.{digits}f}"
    text = f"{value['median']:,.{digits}f}"
    if show_range and value["min"] != value["max"]:
        text += f" ({value['min']:,.{digits}f}-{value['max']:,.{digits}f})"
    return text


def markdown(meta: dict[str, Any], cells: Cells, target_labels: dict[str, str]) -> str:
    show_range = meta["repeats"] > 1
    lines = [f"# faregate benchmark, {meta['date']}", ""]
    if meta.get("quick"):
        lines += [
            "**Quick run** (`--quick`): one 3-second run per cell, no ranges. "
            "Use it to see the shape, not to quote.",
            "",
        ]
    lines += [
        f"Machine: {meta['machine']['nproc']} vCPU, {meta['machine']['cpu']}; "
        f"kernel {meta['machine']['kernel']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
        "## How the runs were laid out",
        "",
        *[f"- {x}" for x in meta["layout"]],
        "",
        "## Results",
        "",
        "Medians of the runs" + (" with (min-max)" if show_range else "") + ". "
        "CPU is the server process(es) only (utime+stime from /proc), in ms per request = "
        "CPU seconds per 1,000 requests; for faregate it runs until the run's request records "
        "are all in the database, so writes the batched writers finish after the load stops "
        "are counted (`+s` after the CPU: the longest such wait over the runs). "
        "Added latency is over *direct* in the same cell. `upstream / req`: requests the "
        "mock answered during the runs per request wrk counted (1: every request reached the "
        "upstream; ~0: a cache answered). "
        "`wrk % (core %)`: wrk's own CPU as a share of its core, and that core's total use by "
        "real work (wrk, plus the mock at c>=32, plus everything at c=1), idle loop excluded; "
        "maxima over the runs. wrk near 100% would mean the load generator set the pace; a "
        "client core near 100% at c>=32 means wrk + mock did. `outside` is CPU (in cores) used "
        "by anything but the benchmark during the run: other work on this shared machine, "
        "and interrupt handling.",
        "",
    ]
    for key, per_target in cells.items():
        scenario = BY_KEY[key]
        lines += [
            f"### {scenario.label}",
            "",
            "| target | req/s | p50 ms | p99 ms | added p50 / p99 ms | CPU ms/req "
            "| RSS / peak MB | errors | upstream / req | wrk % (core %) | outside |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, cell in per_target.items():
            added = (
                "-"
                if name == DIRECT or "added_p50_ms" not in cell
                else f"{cell['added_p50_ms']:+.2f} / {cell['added_p99_ms']:+.2f}"
            )
            cpu = _fmt(cell["cpu_ms_per_req"], 3, show_range)
            if cell["services_ms_per_req"]["median"] > 0:
                cpu += f" + {cell['services_ms_per_req']['median']:.3f} PG/Redis"
            if cell.get("stored_after_s_max", 0) > 0.5:
                cpu += f" (+{cell['stored_after_s_max']:.1f} s)"
            lines.append(
                f"| {target_labels.get(name, name)} | {_fmt(cell['rps'], 0, show_range)} "
                f"| {_fmt(cell['p50_ms'], 2, show_range)} | {_fmt(cell['p99_ms'], 2, show_range)} "
                f"| {added} | {cpu} | {cell['rss_mb']:.0f} / {cell['peak_rss_mb']:.0f} "
                f"| {cell['errors']} | {_upstream(cell)} | {cell['wrk_cpu_pct_max']:.0f} "
                f"({cell['wrk_core_pct_max']:.0f}) | {cell['unattributed_cores_max']:.2f} |"
            )
        lines.append("")
    if meta.get("cache"):
        lines += ["## Cache hits", "", *_figure_lines(meta["cache"]), ""]
    if meta.get("peers"):
        lines += ["## Against the peers", "", *_figure_lines(meta["peers"]), ""]
    lines += [
        "## Targets",
        "",
        "| check | figure | target | met | basis |",
        "| --- | ---: | ---: | :---: | --- |",
    ]
    for c in meta["checks"]:
        met = {
            True: "yes",
            False: "**no**",
            None: "-" if c["value"] is not None else "not measured",
        }[c["met"]]
        value = "-" if c["value"] is None else f"{c['value']:g}"
        lines.append(f"| {c['check']} | {value} | {c['target']} | {met} | {c['basis']} |")
    lines.append("")
    if meta.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in meta["notes"]], ""]
    return "\n".join(lines)


def _upstream(cell: dict[str, Any]) -> str:
    upstream = cell.get("upstream_per_req")
    return "-" if upstream is None else f"{upstream['median']:.2f}"


CACHED = "cached-c32"


def cache_figures(cells: Cells) -> list[dict[str, Any]]:
    """What the cache cell shows beside the targets: each gateway's cache hits against
    LiteLLM's, and a hit's CPU against a request that reaches the upstream. No targets."""
    if CACHED not in cells:
        return []
    out = []

    def add(name: str, value: float | None, basis: str) -> None:
        if value is not None:
            out.append({"figure": name, "value": value, "basis": basis})

    for target, label in ((FG, "faregate embedded"), (FG_PG, "faregate PostgreSQL+Redis")):
        add(
            f"{label} cache hits / LiteLLM cache hits, req/s",
            _ratio(_get(cells, CACHED, target, "rps"), _get(cells, CACHED, LL, "rps")),
            f"{CACHED}, measured req/s",
        )
        add(
            f"{label} CPU per cache hit / per request answered upstream",
            _ratio(
                _get(cells, CACHED, target, "cpu_ms_per_req"),
                _get(cells, "chat-c32", target, "cpu_ms_per_req"),
            ),
            f"{CACHED} / chat-c32",
        )
        add(
            f"{label} CPU per cache hit / pass-through's per forwarded request",
            _ratio(
                _get(cells, CACHED, target, "cpu_ms_per_req"),
                _get(cells, CACHED, PT, "cpu_ms_per_req"),
            ),
            CACHED,
        )
    return out


def peer_figures(cells: Cells) -> list[dict[str, Any]]:
    """Each peer gateway's CPU per request against faregate embedded's, cell by cell, with
    the full pipeline on faregate's side (no targets: LiteLLM's is a check of its own). The
    cache cell is left to `cache_figures`: a peer without a cache answers it upstream."""
    out = []
    for peer, label in PEERS.items():
        for scenario in cells:
            if scenario == CACHED:
                continue
            value = _ratio(
                _get(cells, scenario, peer, "cpu_ms_per_req"),
                _get(cells, scenario, FG, "cpu_ms_per_req"),
            )
            if value is not None:
                out.append(
                    {
                        "figure": f"{label} CPU per request / faregate embedded",
                        "value": value,
                        "basis": scenario,
                    }
                )
    return out


def _figure_lines(figures: list[dict[str, Any]]) -> list[str]:
    return [
        "| figure | value | basis |",
        "| --- | ---: | --- |",
        *(f"| {f['figure']} | {f['value']:g}x | {f['basis']} |" for f in figures),
    ]


def write_json(path: Path, meta: dict[str, Any], cells: Cells) -> None:
    path.write_bytes(orjson.dumps({"meta": meta, "cells": cells}, option=orjson.OPT_INDENT_2))


def ensure_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401

        return True
    except ImportError:
        pass
    print("installing matplotlib into the dev virtualenv (for the chart only)", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "matplotlib"], capture_output=True, text=True
    )
    if done.returncode != 0:
        print("could not install matplotlib; no chart: " + done.stderr[-300:], file=sys.stderr)
        return False
    return True


def chart(path: Path, cells: Cells, target_labels: dict[str, str], title: str) -> bool:
    if not ensure_matplotlib():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(cells)
    targets = list(dict.fromkeys(t for per in cells.values() for t in per))
    fig, axes = plt.subplots(2, 1, figsize=(max(12, 1.9 * len(scenarios)), 9), sharex=True)
    width = 0.8 / max(len(targets), 1)
    for ax, key, ylabel in (
        (axes[0], "rps", "requests/s (log)"),
        (axes[1], "cpu_ms_per_req", "server CPU ms per request (log)"),
    ):
        for i, target in enumerate(targets):
            xs, ys, lo, hi = [], [], [], []
            for j, s in enumerate(scenarios):
                cell = cells[s].get(target)
                if cell is None or (key == "cpu_ms_per_req" and target == DIRECT):
                    continue
                v = cell[key]
                xs.append(j + (i - (len(targets) - 1) / 2) * width)
                ys.append(v["median"])
                lo.append(v["median"] - v["min"])
                hi.append(v["max"] - v["median"])
            ax.bar(xs, ys, width, yerr=[lo, hi], label=target_labels.get(target, target), capsize=2)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[1].set_xticks(range(len(scenarios)))
    axes[1].set_xticklabels([BY_KEY[s].label.replace(", ", "\n", 1) for s in scenarios], fontsize=8)
    # Above the bars, not on them: with seven targets the legend covered a cell.
    axes[0].legend(fontsize=8, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


README_START = "<!-- latest-results:start -->"
README_END = "<!-- latest-results:end -->"


def _matrix(cells: Cells, labels: dict[str, str], key: str, digits: int) -> list[str]:
    targets = list(dict.fromkeys(t for per in cells.values() for t in per))
    lines = [
        "| scenario | " + " | ".join(labels.get(t, t) for t in targets) + " |",
        "| --- |" + " ---: |" * len(targets),
    ]
    for scenario, per in cells.items():
        row = [_fmt(per[t][key]["median"], digits) if t in per else "-" for t in targets]
        lines.append(f"| {BY_KEY[scenario].label} | " + " | ".join(row) + " |")
    return lines


def readme_section(meta: dict[str, Any], cells: Cells, labels: dict[str, str], stem: str) -> str:
    m, v = meta["machine"], meta["versions"]
    kind = (
        "quick run (1 x 3 s per cell)"
        if meta["quick"]
        else (f"{meta['repeats']} x {meta['duration_s']:g} s per cell")
    )
    lines = [
        README_START,
        f"### Latest results: {meta['date']}, {kind}",
        "",
        f"Machine: {m['nproc']} vCPU ({m['cpu']}), kernel {m['kernel']}. "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + ".",
        f"Full tables: [`results/{stem}.md`](results/{stem}.md), data "
        f"[`results/{stem}.json`](results/{stem}.json), chart "
        f"[`results/{stem}.png`](results/{stem}.png).",
        "",
        "Server CPU per request, ms (= CPU seconds per 1,000 requests; medians):",
        "",
        *_matrix(cells, labels, "cpu_ms_per_req", 3),
        "",
        "Requests per second (medians):",
        "",
        *_matrix(cells, labels, "rps", 0),
        "",
        "Targets:",
        "",
        "| check | figure | target | met |",
        "| --- | ---: | ---: | :---: |",
    ]
    for c in meta["checks"]:
        met = {
            True: "yes",
            False: "**no**",
            None: "-" if c["value"] is not None else "not measured",
        }[c["met"]]
        value = "-" if c["value"] is None else f"{c['value']:g}"
        lines.append(f"| {c['check']} ({c['basis']}) | {value} | {c['target']} | {met} |")
    if meta.get("cache"):
        lines += ["", "Cache hits (no targets):", "", *_figure_lines(meta["cache"])]
    if meta.get("peers"):
        lines += ["", "Against the peers (no targets):", "", *_figure_lines(meta["peers"])]
    if meta.get("notes"):
        lines += ["", "Notes from the run:", "", *[f"- {n}" for n in meta["notes"]]]
    lines.append(README_END)
    return "\n".join(lines)


HOLDS_MARKERS = ("<!-- holds-results:start -->", "<!-- holds-results:end -->")
HOLD_BACKENDS = {
    "faregate-embedded": ("embedded (SQLite, in-process book)", 1.0),
    "faregate-pg": ("PostgreSQL (book in PostgreSQL)", 3.0),
    "faregate-pg-redis": ("PostgreSQL + Redis (book in Redis)", 3.0),
}


def hold_costs(cells: Cells) -> list[dict[str, Any]]:
    """Per backend and scenario: p50 and CPU per request with and without a wallet, and the
    difference, which is what the hold before the upstream call and the settle after it add."""
    rows = []
    for scenario, per in cells.items():
        for base, (label, limit) in HOLD_BACKENDS.items():
            with_, without = per.get(base), per.get(base + "-nowallet")
            if not with_ or not without:
                continue
            p50 = (with_["p50_ms"]["median"], without["p50_ms"]["median"])
            cpu = (with_["cpu_ms_per_req"]["median"], without["cpu_ms_per_req"]["median"])
            rows.append(
                {
                    "scenario": scenario,
                    "backend": base,
                    "label": label,
                    "p50_ms": p50,
                    "added_p50_ms": round(p50[0] - p50[1], 3),
                    "cpu_ms_per_req": cpu,
                    "added_cpu_ms": round(cpu[0] - cpu[1], 3),
                    "target_ms": limit,
                }
            )
    return rows


def holds_section(meta: dict[str, Any], cells: Cells, stem: str) -> str:
    m = meta["machine"]
    lines = [
        HOLDS_MARKERS[0],
        f"### What a wallet hold costs: {meta['date']}, {meta['repeats']} x "
        f"{meta['duration_s']:g} s per cell",
        "",
        f"Machine: {m['nproc']} vCPU ({m['cpu']}). Each backend ran twice in the same run, the "
        "bench customer with a prepaid wallet (every request held before the upstream call, "
        "posted after it) and without one (no hold); everything else identical. Full tables: "
        f"[`results/{stem}.md`](results/{stem}.md).",
        "",
        "| backend | scenario | p50 with / without wallet, ms | hold + settle adds, p50 | "
        "CPU per request with / without, ms | target (added p50) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in hold_costs(cells):
        met = "yes" if r["added_p50_ms"] < r["target_ms"] else "**no**"
        target = f"< {r['target_ms']:g} ms: {met}" if r["scenario"] == "chat-c1" else "-"
        lines.append(
            f"| {r['label']} | {BY_KEY[r['scenario']].label} | "
            f"{r['p50_ms'][0]:.3f} / {r['p50_ms'][1]:.3f} | {r['added_p50_ms']:+.3f} ms | "
            f"{r['cpu_ms_per_req'][0]:.3f} / {r['cpu_ms_per_req'][1]:.3f} | {target} |"
        )
    lines += [
        "",
        "At c = 1 every party shares one core, so the added p50 is the hold's CPU plus its "
        "round trips to the store; at c = 32 the p50 is mostly queueing, and CPU per request "
        "is the figure to read.",
        HOLDS_MARKERS[1],
    ]
    return "\n".join(lines)


def update_readme(
    path: Path, section: str, start: str = README_START, end: str = README_END
) -> None:
    """Replace a generated section of bench/README.md (or append it)."""
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def file_tag(value: str) -> str:
    """A `--tag` as the suffix of result file names: `x` and `-x` both give `-x` (argparse
    takes `--tag -x` for an option, so the dash may be left out)."""
    return value if not value or value.startswith("-") else f"-{value}"
