"""A loop-by-loop replay for tiny worlds, written from the definitions (tests only).

Per opportunity, in the world's (user, time) order: the user's signal tier from the full list of their click and
conversion event times; for every candidate the policy engine's own `decide` (raw counts: each (user, entity)
pair's list of shown timestamps, counted in each window (t − W, t]); the auction as a Python max (first
candidate wins ties); the truth as n_eff = 1 + Σ 2^(−age/h) summed over the pair's shown timestamps and the
simulator's `response_multiplier`.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import numpy as np

from freqcap.domain.evaluation.policies import ReplayPolicy, true_caps
from freqcap.domain.evaluation.traffic import Traffic, entity_of
from freqcap.domain.events import LEVELS
from freqcap.domain.policy.engine import Candidate, EntityState, decide, penalty_for_distance
from freqcap.domain.simulate.model import DAY_US
from freqcap.domain.simulate.params import response_multiplier


def _dt(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, tz=UTC)


def brute_replay(
    traffic: Traffic, policy: ReplayPolicy, *, floor: float = 0.5, lookback_us: int = 28 * DAY_US
) -> dict[str, np.ndarray]:
    w = traffic.world
    p = w.params
    aud_names = p.audience_names()
    m = w.n_impressions
    layout = np.empty(m, dtype=np.int64)
    layout[traffic.orig] = np.arange(m)
    shown: dict[tuple[str, int], list[int]] = defaultdict(list)  # (level, pair entity key) -> shown ts
    clicks: dict[int, list[int]] = defaultdict(list)
    convs: dict[int, list[int]] = defaultdict(list)
    conv_mult = [f.conv_multiplier for f in p.formats.values()]
    click_mult = [f.click_multiplier for f in p.formats.values()]
    caps_true = true_caps(p, floor)
    windows = sorted(
        {c.window_seconds for rule in (policy.policy.rules + policy.policy.defaults) for c in rule.caps}
        if policy.policy is not None
        else set()
    )
    out = {
        "shown_cand": np.full(m, -1),
        "p_conv": np.zeros(m),
        "converted": np.zeros(m, dtype=bool),
        "clicked": np.zeros(m, dtype=bool),
        "past": np.zeros(m, dtype=bool),
        "tier": np.zeros(m, dtype=np.int64),
    }
    for i in range(m):
        lay = layout[i]
        u = int(w.imp_user[i])
        t = int(w.imp_ts[i])
        aud = aud_names[w.audience[u]]
        lv_params = p.audiences[aud].levels
        if any(e < t and t - e < lookback_us for e in convs[u]):
            tier, code = "converter", 2
        elif any(e < t and t - e < lookback_us for e in clicks[u]):
            tier, code = "engaged", 1
        else:
            tier, code = "impression_only", 0
        out["tier"][i] = code
        ads = [int(a) for a in traffic.cand_ad[lay]]
        ents = [{lv: int(entity_of(w, lv, np.array([a]))[0]) for lv in LEVELS} for a in ads]

        def n_eff(level: str, entity: int, _u=u, _t=t, _aud=aud) -> float:
            h = p.audiences[_aud].levels[level].half_life_days * DAY_US
            return 1.0 + sum(2.0 ** (-(_t - s) / h) for s in shown[(level, _u, entity)])

        if policy.counts == "response":
            pens = []
            for e in ents:
                g = 1.0
                for lv in LEVELS:
                    lp = lv_params[lv]
                    g *= float(response_multiplier(n_eff(lv, e[lv]), lp.alpha, lp.kappa, lp.beta))
                pens.append(g)
        elif policy.policy is None:
            pens = [1.0] * len(ads)
        elif policy.counts == "effective":
            pens = []
            for e in ents:
                mult, ok = 1.0, True
                for lv in LEVELS:
                    for rule in policy.policy.rules_for(aud, tier, lv):
                        for cap in rule.caps:
                            d = cap.max - (n_eff(lv, e[lv]) - 1.0)
                            if rule.mode == "hard":
                                ok = ok and d >= 1
                            else:
                                mult = min(mult, penalty_for_distance(d, policy.policy.penalty))
                pens.append(round(mult, 6) if ok else 0.0)
        else:
            cands = [Candidate(ad_id=f"ad{e['ad']}", campaign_id=f"c{e['campaign']}", advertiser_id=f"a{e['advertiser']}")
                     for e in ents]  # fmt: skip
            states = {}
            for e in ents:
                for lv in LEVELS:
                    key = (
                        lv,
                        {"ad": f"ad{e['ad']}", "campaign": f"c{e['campaign']}", "advertiser": f"a{e['advertiser']}"}[
                            lv
                        ],
                    )
                    ts = shown[(lv, u, e[lv])]
                    states[key] = EntityState(
                        counts={wsec: sum(1 for s in ts if s > t - wsec * 1_000_000) for wsec in windows}
                    )
            pens = [d.penalty for d in decide(policy.policy, aud, tier, cands, states, _dt(t))]
        eff = [float(traffic.score[lay, c]) * pens[c] for c in range(len(ads))]
        best = max(range(len(eff)), key=lambda c: (eff[c], -c))
        if not (eff[best] > 0 and eff[best] >= policy.reserve):
            continue
        e = ents[best]
        gain = 1.0
        past = False
        for lv in LEVELS:
            lp = lv_params[lv]
            ne = n_eff(lv, e[lv])
            gain *= float(response_multiplier(ne, lp.alpha, lp.kappa, lp.beta))
            past = past or ne > caps_true[aud][lv]
            shown[(lv, u, e[lv])].append(t)
        ad_pair = int(traffic.pair[lay, best, -1])
        gain *= float(traffic.relevance[ad_pair])
        f = int(w.imp_format[i])
        pc = min(p.p_max, float(w.baseline[u]) * conv_mult[f] * gain)
        pk = min(p.p_max, float(w.click_propensity[u]) * click_mult[f] * gain)
        out["shown_cand"][i] = best
        out["p_conv"][i] = pc
        out["past"][i] = past
        if traffic.u_conv[lay] < pc:
            out["converted"][i] = True
            convs[u].append(t + int(traffic.conv_delay_us[lay]))
        if traffic.u_click[lay] < pk:
            out["clicked"][i] = True
            clicks[u].append(t + int(traffic.click_delay_us[lay]))
    return out
