"""The on-call page: one self-contained HTML file (inline CSS, no scripts, no network) that answers at a glance
"is serving degraded, since when, which cohort?" — then alarms, cohorts, drift, stream lag and realized frequency.

`render_page(context)` is pure: it formats a plain dict that the monitoring job assembles (`jobs.page_context`).
Elements tests and people look for carry ids: `#serving-status` (`data-state` = `degraded` or `ok`),
`#since`, `#alarms`, `#cohorts` (rows `data-cohort`, class `off` when an incident is open for the cohort),
`#drift`, `#stream`, `#frequency`, `#fairness` (rows `data-cohort`, `data-level`, `data-verdict`),
`#fragmentation` (rows `data-campaign`, `data-recommendation`), `#paging`.
"""

from __future__ import annotations

from html import escape
from typing import Any

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f4f5f7;color:#1d2433}
header{padding:14px 24px;background:#1d2433;color:#fff;display:flex;justify-content:space-between;align-items:baseline}
header h1{font-size:20px;margin:0} header span{font-size:13px;opacity:.8}
main{display:grid;grid-template-columns:1fr 1fr;gap:14px;padding:14px 24px}
section{background:#fff;border-radius:6px;padding:12px 16px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
section.wide{grid-column:1 / span 2}
h2{font-size:15px;margin:0 0 8px 0;text-transform:uppercase;letter-spacing:.04em;color:#4a5468}
#serving-status{padding:16px 20px;border-radius:6px;color:#fff}
#serving-status[data-state=degraded]{background:#c62828} #serving-status[data-state=ok]{background:#2e7d32}
#serving-status .big{font-size:28px;font-weight:700} #serving-status .detail{font-size:15px;margin-top:4px}
table{border-collapse:collapse;width:100%;font-size:13px} th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #e3e6ec}
th{color:#4a5468;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.off td{background:#fdecea;font-weight:600} .sev-page{color:#c62828;font-weight:700} .sev-warn{color:#b26a00;font-weight:700}
.new{background:#c62828;color:#fff;border-radius:3px;padding:0 4px;font-size:11px;margin-left:4px}
.muted{color:#6b7385} .ok{color:#2e7d32;font-weight:600} .bad{color:#c62828;font-weight:600}
ul{margin:4px 0;padding-left:18px;font-size:13px}
"""


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _signed_pts(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:+.1f} pts"


def _time(value: str | None) -> str:
    if not value:
        return "–"
    return escape(value.replace("T", " ").replace("+00:00", " UTC"))


def _status(ctx: dict[str, Any]) -> str:
    fo = ctx.get("fail_open") or {}
    degraded = bool(ctx.get("serving_degraded"))
    rate, decisions = fo.get("rate"), fo.get("decisions", 0)
    reasons = ", ".join(f"{escape(k)}: {v:,}" for k, v in sorted((fo.get("reasons") or {}).items()))
    window = escape(ctx.get("window", ""))
    if decisions:
        detail = f"fail-open rate {_pct(rate)} of {decisions:,} logged decisions in the last {window}"
        detail += f" ({reasons})" if reasons else ""
    else:
        detail = f"no decisions logged in the last {window}"
    since = ""
    if degraded:
        parts = []
        if fo.get("since"):
            parts.append(f"first failed-open decision of this streak at {_time(fo['since'])}")
            if not fo.get("ongoing"):
                parts.append(f"recovering: last failed-open decision at {_time(fo.get('last_failure'))}")
        if fo.get("incident_opened_at"):
            parts.append(f"alarm open since the run of {_time(fo['incident_opened_at'])}")
        since = f'<div class="detail" id="since">Degraded since: {"; ".join(parts) or "unknown"}</div>'
    state = "degraded" if degraded else "ok"
    headline = "SERVING DEGRADED" if degraded else "Serving OK"
    return (
        f'<div id="serving-status" data-state="{state}"><div class="big">{headline}</div>'
        f'<div class="detail">{detail}</div>{since}</div>'
    )


def _alarms(ctx: dict[str, Any]) -> str:
    fired = {(i["rule"], i["segment"]) for i in ctx.get("fired", [])}
    rows = []
    for i in ctx.get("open", []):
        new = '<span class="new">NEW</span>' if (i["rule"], i["segment"]) in fired else ""
        rows.append(
            f'<tr data-rule="{escape(i["rule"])}" data-segment="{escape(i["segment"])}">'
            f'<td class="sev-{escape(i["severity"])}">{escape(i["severity"])}</td>'
            f"<td>{escape(i['rule'])}{new}</td><td>{escape(i['segment'])}</td><td>{_time(i['opened_at'])}</td>"
            f'<td class="num">{_num(i["value"])}</td><td class="num">{_num(i["threshold"])}</td></tr>'
        )
    body = (
        "<table><tr><th>severity</th><th>rule</th><th>segment</th><th>open since</th><th>value</th>"
        f"<th>threshold</th></tr>{''.join(rows)}</table>"
        if rows
        else '<p class="ok">No open alarms.</p>'
    )
    resolved = ctx.get("resolved", [])
    if resolved:
        items = "".join(
            f"<li>{escape(r['rule'])} [{escape(r['segment'])}] resolved ({escape(r['reason'])}), "
            f"open since {_time(r['opened_at'])}</li>"
            for r in resolved
        )
        body += f'<p class="muted">Resolved in this run:</p><ul>{items}</ul>'
    return f'<section class="wide" id="alarms"><h2>Open alarms</h2>{body}</section>'


def _cohorts(ctx: dict[str, Any]) -> str:
    off = set(ctx.get("cohorts_off", []))
    rows = []
    for c in ctx.get("cohorts", []):
        cls = ' class="off"' if c["segment"] in off else ""
        rows.append(
            f'<tr{cls} data-cohort="{escape(c["cohort"])}"><td>{escape(c["cohort"])}</td>'
            f'<td class="num">{c["decisions"]:,}</td><td class="num">{_pct(c["rate"])}</td>'
            f'<td class="num">{_pct(c["baseline_rate"])}</td><td class="num">{_signed_pts(c["change"])}</td></tr>'
        )
    if not rows:
        return (
            '<section id="cohorts"><h2>Cap hit rate by cohort</h2><p class="muted">No decisions logged.</p></section>'
        )
    names = ", ".join(escape(s.removeprefix("cohort=")) for s in sorted(off)) or "none"
    return (
        f'<section id="cohorts"><h2>Cap hit rate by cohort</h2><p>Cohorts off: <b id="cohorts-off">{names}</b></p>'
        "<table><tr><th>cohort</th><th>decisions</th><th>now</th>"
        f"<th>baseline ({escape(ctx.get('baseline_window', ''))})</th><th>change</th></tr>{''.join(rows)}</table></section>"
    )


def _drift(ctx: dict[str, Any]) -> str:
    d = ctx.get("drift")
    if not d:
        notes = "".join(f"<li>{escape(n)}</li>" for n in ctx.get("drift_notes", []))
        return (
            f'<section id="drift"><h2>Drift</h2><p class="muted">Not computed this run.</p><ul>{notes}</ul></section>'
        )
    rows = "".join(
        f'<tr{" class=off" if c["drifted"] else ""}><td>{escape(c["column"])}</td><td class="num">{_num(c["score"])}</td>'
        f"<td>{escape(c['method'])}</td><td>{'drifted' if c['drifted'] else 'ok'}</td></tr>"
        for c in [*d["columns"], *([d["prediction"]] if d.get("prediction") else [])]
    )
    cls = "bad" if d["drifted_count"] else "ok"
    return (
        f'<section id="drift"><h2>Drift vs training reference</h2><p class="{cls}">{d["drifted_count"]} of '
        f"{len(d['columns'])} feature columns drifted ({_pct(d['drifted_share'], 0)}); {d['current_rows']:,} current vs "
        f"{d['reference_rows']:,} reference rows</p><table><tr><th>column</th><th>score</th><th>test</th><th></th></tr>"
        f"{rows}</table></section>"
    )


def _stream(ctx: dict[str, Any]) -> str:
    s = ctx.get("stream")
    if not s:
        body = '<p class="muted">No stream configured (batch features only).</p>'
    else:
        lag = "unknown" if s.get("lag_seconds") is None else f"{s['lag_seconds']:,.0f} s"
        cls = "bad" if s.get("stale") else "ok"
        body = (
            f'<p class="{cls}">Lag {lag} — {"STALE: serving uses batch features alone" if s.get("stale") else "fresh"}'
            f"</p><p class='muted'>watermark {_time(s.get('watermark'))}, fresh at {_time(s.get('fresh_at'))}</p>"
        )
    return f'<section id="stream"><h2>Stream lag</h2>{body}</section>'


def _frequency(ctx: dict[str, Any]) -> str:
    f = ctx.get("frequency") or {}
    if not f:
        note = escape(ctx.get("frequency_note") or "not computed this run")
        return f'<section id="frequency"><h2>Realized vs configured frequency</h2><p class="muted">{note}</p></section>'
    rows = "".join(
        f'<tr><td>{escape(level)}</td><td class="num">{v["impressions"]:,}</td><td class="num">'
        f'{_pct(v["beyond_cap_share"])}</td><td class="num">{_num(v["p50"])}</td><td class="num">{_num(v["p99"])}</td>'
        f'<td class="num">{_num(v["max"])}</td></tr>'
        for level, v in f.items()
    )
    return (
        '<section id="frequency"><h2>Realized vs configured frequency</h2>'
        f'<p class="muted">policy {escape(str(ctx.get("policy_version") or "–"))}; frequency ÷ cap per (user, entity)</p>'
        "<table><tr><th>level</th><th>impressions</th><th>beyond cap</th><th>p50</th><th>p99</th><th>max</th></tr>"
        f"{rows}</table></section>"
    )


def _verdict(row: dict[str, Any], below: float, above: float) -> str:
    """As the alarm rules judge it: a censored curve (a lower bound) is not judged above its cap."""
    if row["censored"] and (row["uncapped"] or row["ratio"] > 1.0):
        return "not judged"
    if row["uncapped"] or row["ratio"] > above:
        return "overcapped"
    return "suppressed" if row["ratio"] < below else "ok"


def _fairness(ctx: dict[str, Any]) -> str:
    f = ctx.get("fairness")
    head = '<section class="wide" id="fairness"><h2>Fairness: each cohort\'s cap vs its own curve</h2>'
    if not f:
        return (
            f'{head}<p class="muted">Not computed this run (no curves fit, no live policy or no events).</p></section>'
        )
    below, above = ctx.get("fairness_thresholds", (0.5, 2.0))
    rows = []
    for r in f["cohorts"]:
        verdict = _verdict(r, below, above)
        cls = ' class="off"' if verdict in ("suppressed", "overcapped") else ""
        curve = f"{r['curve_cap']} [{r['cap_low']}–{r['cap_high']}]" + ("+" if r["censored"] else "")
        curve += f" ({escape(r['fallback'])})" if r["fallback"] != "none" else ""
        rows.append(
            f'<tr{cls} data-cohort="{escape(r["cohort"])}" data-level="{escape(r["level"])}" data-verdict="{verdict}">'
            f"<td>{escape(r['cohort'])}</td><td>{escape(r['level'])}</td>"
            f'<td class="num">{"none" if r["uncapped"] else r["policy_cap"]}</td><td class="num">{curve}</td>'
            f'<td class="num">{_num(r["ratio"])}</td><td class="num">{_pct(r["cap_hit_rate"])}</td>'
            f'<td class="num">{_pct(r["at_cap_share"])}</td><td class="num">{_num(r["mean_frequency"])}</td>'
            f'<td class="num">{_num(r["p90_frequency"])}</td><td class="num">{_pct(r["beyond_curve_share"])}</td>'
            f"<td>{verdict}</td></tr>"
        )
    return (
        f"{head}<p class=\"muted\">Caps and frequencies count one entity's impressions to one user within the curve's "
        f"window; curve cap = where the cohort's fitted curve says the next impression stops paying [plausible "
        f"range], + censored; curves: {escape(f['curves'])}</p><table><tr><th>cohort</th><th>level</th>"
        "<th>policy cap</th><th>curve cap</th><th>cap ÷ curve</th><th>cap hit rate (log)</th><th>pairs at cap</th>"
        "<th>mean freq.</th><th>p90 freq.</th><th>past curve cap</th><th></th></tr>"
        f"{''.join(rows)}</table></section>"
    )


def _fragmentation(ctx: dict[str, Any]) -> str:
    f = ctx.get("fragmentation")
    head = '<section class="wide" id="fragmentation"><h2>Signal fragmentation (creatives per campaign)</h2>'
    if not f:
        return f'{head}<p class="muted">Not computed this run.</p></section>'
    rows = "".join(
        f'<tr{" class=off" if c["recommendation"] == "consolidate" else ""} data-campaign="{escape(c["campaign_id"])}" '
        f'data-recommendation="{escape(c["recommendation"])}"><td>{escape(c["campaign_id"])}</td>'
        f'<td class="num">{c["creatives"]}</td><td class="num">{c["conversions_per_week"]:,.1f}</td>'
        f'<td class="num">{c["median_per_creative"]:,.1f} / {c["max_per_creative"]:,.1f}</td>'
        f'<td class="num">{_pct(c["share_below"])}</td><td class="num">{_num(c["hhi"])}</td>'
        f'<td class="num">{_num(c["effective_creatives"])}</td><td>{escape(c["text"])}</td></tr>'
        for c in f["shown"]
    )
    cls = "bad" if f["to_consolidate"] else "ok"
    return (
        f'{head}<p class="{cls}">{f["to_consolidate"]} of {f["campaigns"]} campaigns should consolidate creatives '
        f"(learning threshold {f['threshold']:g} conversions per creative per week, over the last "
        f"{escape(f['window'])}); {f['underfunded']} below it even as one creative</p>"
        "<table><tr><th>campaign</th><th>creatives</th><th>conversions / week</th><th>per creative: median / max</th>"
        "<th>creatives below</th>"
        f"<th>HHI (impressions)</th><th>effective creatives</th><th>recommendation</th></tr>{rows}</table></section>"
    )


def _paging(ctx: dict[str, Any]) -> str:
    p = ctx.get("paging")
    head = '<section id="paging"><h2>Paging</h2>'
    if not p or not p.get("receivers"):
        return f'{head}<p class="muted">No webhook receivers configured (monitoring.paging.receivers).</p></section>'
    items = "".join(
        f'<li class="{"ok" if m["ok"] else "bad"}">{escape(m["receiver"])}: {escape(m["status"])} {escape(m["rule"])} '
        f"— {'delivered' if m['ok'] else 'FAILED: ' + escape(str(m['error']))} after {m['attempts']} attempt(s)</li>"
        for m in p.get("messages", [])
    )
    pending = p.get("pending", 0)
    state = f'<p class="bad">{pending} message(s) pending: retried next run</p>' if pending else ""
    quiet = f"<p class='muted'>{len(p.get('suppressed', []))} still-firing alarm(s) not repeated yet</p>"
    return f"{head}{state}<ul>{items or '<li>nothing due this run</li>'}</ul>{quiet}</section>"


def _notes(ctx: dict[str, Any]) -> str:
    links = []
    if ctx.get("report_html"):
        links.append(
            f'<li>Evidently drift report: <a href="{escape(ctx["report_html"])}">{escape(ctx["report_html"])}</a></li>'
        )
    if ctx.get("workspace"):
        links.append(f"<li>Evidently workspace: {escape(ctx['workspace'])} (<code>make ui</code>)</li>")
    notes = "".join(f"<li>{escape(n)}</li>" for n in ctx.get("notes", []))
    return f'<section class="wide" id="notes"><h2>Links and notes</h2><ul>{"".join(links)}{notes}</ul></section>'


def render_page(ctx: dict[str, Any]) -> str:
    """The on-call page for one monitoring run (see the module docstring for the context's keys)."""
    title = f"freqcap on-call — {_time(ctx.get('as_of'))}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_CSS}</style></head><body><header><h1>{title}</h1>"
        f"<span>cap hits and fail-open over the last {escape(ctx.get('window', ''))}; drift over the last "
        f"{escape(ctx.get('drift_window', ''))}</span></header><main>"
        f'<section class="wide">{_status(ctx)}</section>{_alarms(ctx)}{_cohorts(ctx)}{_drift(ctx)}{_stream(ctx)}'
        f"{_frequency(ctx)}{_paging(ctx)}{_fairness(ctx)}{_fragmentation(ctx)}{_notes(ctx)}</main></body></html>\n"
    )
