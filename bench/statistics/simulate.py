"""The statistical audit of the canary decision, simulated through the product's own code.

    .venv/bin/python bench/statistics/simulate.py [--canaries-1h 400] [--canaries-24h 60]
        [--seed 7] [--only ROW] [--processes 2] [--latency-draws 2000]

Prints a markdown report ("## Decision audit"): one table per row of the audit, each line
a measured rate with its 95% Wilson interval, the number of canaries behind it and the
product's target. Progress goes to stderr.

Method. Whole canaries are simulated without a database, block by block: the monitor runs
every 5 minutes, and a block is the 5 minutes before a run (``generate``: Poisson arrivals,
failure counts per block from binomials, latencies for the latency rows only). At every run
the evidence is assembled as ``monitoring.decision.selectors.evidence_at`` assembles it
(``replay.replay_monitor``):

- ``v1_5m``/``v2_5m`` and ``v1_10m``/``v2_10m``: each version's served requests in the last
  block and in the last two (the canary's share of requests is served by v2);
- ``pairs_5m``/``pairs_10m``: the pairs of the same windows; ``shadow_percentage`` defaults
  to 100, so every request is a pair (both versions evaluated the same input);
- ``pairs_since_start`` = ``discordant_since_start``: every pair since the canary started;
- ``strata``: without pairs only, (v1 errors, v1 requests, v2 errors, v2 requests) per
  traffic step;
- ``latency_samples_5m``: (v1 latencies, v2 latencies, basis) of the last block, on the
  pairs; ``look``: the run's index since the start; ``sample_ratio``:
  ``paired.sample_ratio_test`` over the new contexts assigned since the step began (30% of
  requests open a new context, assigned at the step's split).

The decision is ``monitoring.statistics.decision.decide(evidence, config,
breaker_state=...)`` with ``deployments.canary_config.default_canary_config()`` (plus a
row's overrides), and the monitor acts on it as ``monitoring.automation.monitor`` does:
``rollback`` ends the canary (auto_rollback), and with auto_progress ``_progress`` is
replayed (raise by ``increment`` after ``duration_minutes`` of a healthy step when
``may_raise_traffic``, promote at 100% only on ``promote``). The breaker rows feed every
v2-served request to ``monitoring.breaker.state.record`` as
``monitoring.recording.executions.execution_observe`` does (a v2 failure counts only when the
shadowed v1 succeeded).

Simplifications, each harmless to what is measured or stated in its row:

- In the decision rows the breaker is CLOSED (row 1 measures it on its own).
- The latency rows draw at most ``--latency-draws`` latencies per version and window
  (production reads up to 50,000): the rule's ranks scale with the sample, the burst model
  does not. Other rows carry no latency samples, so the latency rule cannot fire there.
- Served requests split at the current traffic share (stickiness ignored); ``paired_p95_5m``
  (not read by ``decide``) is left empty; windows are aligned on the runs.
- Speed: ``decide`` spends ~95% of its time in ``sequential.paired_difference_cs``; it is
  evaluated for all the since-start counts of a chunk in one vectorised call of the
  product's own elementwise helper and served from that table (``replay.prime_difference_cs``;
  the largest difference from the scalar call is printed under the tables).

Canaries are simulated in chunks seeded from (seed, cell, chunk), so the numbers do not
depend on ``--processes``. The modules: ``generate`` (traffic, failures, latencies),
``replay`` (evidence, decision, monitor, breaker, SRM), ``rows`` (the audit's rows).
"""

from __future__ import annotations

import argparse
import multiprocessing
import shlex
import sys
import time
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]  # the repository, then this directory

import numpy as np  # noqa: E402
from replay import LATENCY_DRAWS, Cell, Outcome, check_primed, run_chunk  # noqa: E402
from rows import Case, Group, groups, srm_flagged  # noqa: E402

from deployments.canary_config import default_canary_config  # noqa: E402
from monitoring.statistics.analysis import Evidence, VersionStats  # noqa: E402
from monitoring.statistics.decision import decide  # noqa: E402
from monitoring.statistics.paired import PairedCounts, wilson_interval  # noqa: E402

CHUNK_1H = 100
CHUNK_24H = 10

Task = tuple[Cell, int, int, int, int]


def _chunks(cell: Cell, seed: int, latency_draws: int) -> list[Task]:
    size = CHUNK_1H if cell.hours == 1 else CHUNK_24H
    tasks = []
    for index, start in enumerate(range(0, cell.canaries, size)):
        tasks.append((cell, index, min(size, cell.canaries - start), seed, latency_draws))
    return tasks


def _work(task: Task) -> tuple[str, int, list[Outcome], float]:
    cell, chunk, size, seed, latency_draws = task
    started = time.perf_counter()
    outcomes = run_chunk(cell, chunk, size, seed, latency_draws)
    return cell.key, chunk, outcomes, time.perf_counter() - started


def simulate(
    cells: Iterable[Cell], seed: int, processes: int, latency_draws: int
) -> dict[str, list[Outcome]]:
    """Every cell's outcomes, in canary order."""
    tasks = [task for cell in cells for task in _chunks(cell, seed, latency_draws)]
    tasks.sort(key=lambda task: -task[0].cost() * task[2] / task[0].canaries)
    labels = {task[0].key: _describe(task[0]) for task in tasks}
    parts: dict[str, dict[int, list[Outcome]]] = {}
    started = time.perf_counter()
    if processes > 1:
        context = multiprocessing.get_context("fork")
        with context.Pool(processes) as pool:
            results = pool.imap_unordered(_work, tasks, chunksize=1)
            _collect(results, parts, labels, len(tasks), started)
    else:
        _collect(map(_work, tasks), parts, labels, len(tasks), started)
    return {
        key: [outcome for _, chunk in sorted(by_chunk.items()) for outcome in chunk]
        for key, by_chunk in parts.items()
    }


def _collect(
    results: Iterable[tuple[str, int, list[Outcome], float]],
    parts: dict[str, dict[int, list[Outcome]]],
    labels: dict[str, str],
    total: int,
    started: float,
) -> None:
    for done, (key, chunk, outcomes, seconds) in enumerate(results, start=1):
        parts.setdefault(key, {})[chunk] = outcomes
        print(
            f"[{done}/{total}] {time.perf_counter() - started:6.0f}s  {labels[key]} "
            f"chunk {chunk} ({len(outcomes)} canaries, {seconds:.1f}s)",
            file=sys.stderr,
            flush=True,
        )


def _describe(cell: Cell) -> str:
    failures = cell.failures
    text = (
        f"{cell.kind} {failures.model} {failures.v1:g}->{failures.v2:g} {cell.rate:g}req/s "
        f"{cell.hours}h"
    )
    if cell.latency_shift_ms is not None:
        text += f" latency+{cell.latency_shift_ms:g}ms"
    if cell.config:
        text += " " + ",".join(f"{k}={v}" for k, v in cell.config)
    if not cell.paired:
        text += " unpaired"
    if cell.kind == "srm" and cell.stored_while_open:
        text += " stored-while-open"
    return text


# --- the report -----------------------------------------------------------------------------


def _percent(value: float) -> str:
    value = 0.0 if abs(value) < 1e-9 else value
    return f"{value:.1%}" if value >= 0.001 or value == 0 else f"{value:.2%}"


def case_line(case: Case, outcomes: list[Outcome], failed: list[str], group: Group) -> str:
    total = len(outcomes)
    hits = [outcome for outcome in outcomes if case.hit(outcome)]
    share = len(hits) / total if total else 0.0
    rate = f"{_percent(share)} ({len(hits)}/{total})"
    median = None
    if case.run is not None:
        runs = [case.run(outcome) for outcome in hits]
        runs = [run for run in runs if run is not None]
        if runs:
            median = float(np.median(runs))
            rate += f", median run {median:g}"
            if case.max_median is not None:
                # The median is at most N exactly when half the canaries are caught by run N:
                # this share, with its interval, says how far from the edge the median is.
                early = sum(run <= case.max_median for run in runs)
                low, high = wilson_interval(early, total) or [0.0, 1.0]
                rate += (
                    f"; by run {case.max_median}: {_percent(early / total)} "
                    f"({_percent(low)} - {_percent(high)})"
                )
        else:
            rate += ", median run -"
    low, high = wilson_interval(len(hits), total) or [0.0, 1.0]
    verdict = ""
    if case.limit is not None:
        met = share <= case.limit + 1e-12
        verdict = ": met" if met else ": **NOT met**"
    elif case.at_least is not None:
        met = share >= case.at_least and (
            case.max_median is None or (median is not None and median <= case.max_median)
        )
        verdict = ": met" if met else ": **NOT met**"
    else:
        met = True
    if not met:
        failed.append(f"row {group.number}: {case.label} -> {rate} (must be {case.must})")
    interval = f"{_percent(low)} - {_percent(high)}"
    return f"| {case.label} | {rate} | {interval} | {total} | {case.must}{verdict} |"


def explain(case: Case, outcomes: list[Outcome]) -> str | None:
    """Why: the rules that rolled back and when, what the evidence held, v2's own rate."""
    from rows import rolled_back, rolled_back_for_latency, shown_worse

    hits = [outcome for outcome in outcomes if case.hit(outcome)]
    parts = []
    if case.hit in (rolled_back, rolled_back_for_latency) and hits:
        rules: dict[str, int] = {}
        for outcome in hits:
            combo = "+".join(outcome.rollback_rules) or "breaker"
            rules[combo] = rules.get(combo, 0) + 1
        parts.append("rules " + ", ".join(f"{rule} x{count}" for rule, count in rules.items()))
        runs = sorted(outcome.rollback_run for outcome in hits if outcome.rollback_run)
        parts.append("runs " + _runs(runs))
        examples = []
        for outcome in hits[:3]:
            note = outcome.notes.get("rollback", {})
            own, ten = note.get("own_5m"), note.get("own_10m")
            examples.append(
                f"run {outcome.rollback_run}: own rate 5 min "
                f"{'-' if own is None else f'{own:.2%}'}, 10 min "
                f"{'-' if ten is None else f'{ten:.2%}'} ({note.get('basis')}), "
                f"{note.get('worse', '')}"
            )
        parts.append("e.g. " + "; ".join(examples))
    if case.hit is shown_worse and hits:
        runs = sorted(outcome.worse_run for outcome in hits if outcome.worse_run)
        parts.append("first rejected at runs " + _runs(runs))
        parts.append(
            "e.g. " + "; ".join(str(outcome.notes.get("worse", "")) for outcome in hits[:2])
        )
    if case.hit is rolled_back and (case.at_least is not None or not hits):
        owns = [outcome.notes["own_5m"] for outcome in outcomes if "own_5m" in outcome.notes]
        if owns:
            mean = sum(own[0] for own in owns) / max(1, sum(own[1] for own in owns))
            highest = sorted(own[2] for own in owns)
            parts.append(
                f"v2's own-failure rate in the 5-minute windows: mean {mean:.2%}, highest per "
                f"canary median {highest[len(highest) // 2]:.2%} (rollback needs > 5% with "
                "worse.rejected)"
            )
        worse = [outcome.worse_run for outcome in outcomes if outcome.worse_run]
        if worse:
            parts.append(
                f"worse.rejected in {len(worse)}/{len(outcomes)}, median run "
                f"{float(np.median(worse)):g}"
            )
    if case.hit is rolled_back_for_latency and not hits:
        verdicts = sum(outcome.notes.get("latency_verdicts", 0) for outcome in outcomes)
        runs = sum(outcome.runs for outcome in outcomes)
        parts.append(f"the latency test was conclusive at {verdicts:,} of {runs:,} runs")
    return "; ".join(parts) or None


def _runs(runs: list[int]) -> str:
    shown = ", ".join(map(str, runs[:15]))
    return shown + (f", ... ({len(runs)})" if len(runs) > 15 else "")


def row_six(failed: list[str]) -> list[str]:
    """v2 fails 2 of 20 inputs v1 handles: readiness must not call v2 non-inferior."""
    pairs = PairedCounts(both_succeeded=18, only_v2_failed=2, agreed=18)
    served_v1 = VersionStats(18, 18, 0, 1.0, 0.0, 0, 0, 0)
    served_v2 = VersionStats(2, 1, 1, 0.5, 0.5, 0, 0, 0)
    evidence = Evidence(
        v1_5m=served_v1,
        v2_5m=served_v2,
        v1_10m=served_v1,
        v2_10m=served_v2,
        pairs_5m=pairs,
        pairs_10m=pairs,
        discordant_since_start=pairs,
        pairs_since_start=pairs,
        look=1,
    )
    decision = decide(evidence, default_canary_config(), breaker_state="CLOSED")
    shown = decision.non_inferiority
    interval = shown.interval or (float("nan"), float("nan"))
    verdict = "met" if not shown.shown else "**NOT met**"
    if shown.shown:
        failed.append("row 6: non_inferiority.shown is True for 2 of 20 v2-only failures")
    return [
        "| case | rate | 95% interval | canaries | must be |",
        "|---|---|---|---|---|",
        f"| `decision.non_inferiority.shown` ({shown.basis}, 20 pairs: 18 both succeeded, "
        f"2 only v2 failed) | {shown.shown} | {interval[0]:+.1%} - {interval[1]:+.1%} "
        f"(always-valid bound of v2 - v1) | 1 (deterministic) | False: {verdict} |",
        "",
        f"Recommendation: `{decision.recommendation}`; `worse.rejected` = "
        f"{decision.worse.rejected} ({decision.worse.detail}).",
    ]


def report(
    selected: list[Group],
    outcomes: dict[str, list[Outcome]],
    options: argparse.Namespace,
    elapsed: float,
    primed_error: float,
) -> str:
    lines = [
        "## Decision audit",
        "",
        "Whole canaries simulated through `monitoring.statistics.decision.decide` (evidence "
        "built as `selectors.evidence_at` builds it, a monitor run every 5 minutes, the "
        "default `canary_config`, a 10% canary unless stated); see the docstring of "
        "`bench/statistics/simulate.py` for the method. Rates are shares of canaries; "
        'intervals are 95% Wilson intervals; "met" compares the observed rate with the '
        "target.",
    ]
    failed: list[str] = []
    for group in selected:
        lines += ["", f"### {group.number}. {group.title}", ""]
        if group.note:
            lines += [group.note, ""]
        if group.number == 6:
            lines += row_six(failed)
            continue
        lines += ["| case | rate | 95% interval | canaries | must be |", "|---|---|---|---|---|"]
        why = []
        for case in group.cases:
            before = len(failed)
            lines.append(case_line(case, outcomes[case.cell.key], failed, group))
            if len(failed) > before or (case.must == "information" and case.hit is not srm_flagged):
                reason = explain(case, outcomes[case.cell.key])
                if reason:
                    why.append(f"- {case.label}: {reason}.")
        if why:
            lines += ["", "Why (where a target is not met, and for information):", "", *why]
    lines += ["", "### Targets not met", ""]
    lines += [f"- {line}" for line in failed] or ["- none"]
    command = " ".join(shlex.quote(arg) for arg in ["python", *sys.argv])
    minutes, seconds = divmod(round(elapsed), 60)
    lines += [
        "",
        f"Command: `{command}` (seed {options.seed}, {options.processes} process(es), "
        f"{options.latency_draws:,} latency draws per window).",
        "",
        f"Total time: {minutes} min {seconds} s. Vectorised `paired_difference_cs` against the "
        f"product's scalar call: largest difference {primed_error:.1e}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--canaries-1h", type=int, default=400, help="canaries per 1-h cell")
    parser.add_argument("--canaries-24h", type=int, default=60, help="canaries per 24-h cell")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", type=int, choices=range(1, 13), metavar="ROW", help="1-12")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument(
        "--latency-draws", type=int, default=LATENCY_DRAWS, help="latencies per window"
    )
    options = parser.parse_args()
    started = time.perf_counter()
    primed_error = check_primed(np.random.default_rng(options.seed))
    selected = [
        group
        for group in groups(options.canaries_1h, options.canaries_24h)
        if options.only in (None, group.number)
    ]
    cells = {case.cell.key: case.cell for group in selected for case in group.cases}
    outcomes = simulate(
        cells.values(), options.seed, max(1, options.processes), options.latency_draws
    )
    print(report(selected, outcomes, options, time.perf_counter() - started, primed_error))


if __name__ == "__main__":
    main()
