"""Kaplan-Meier curves per group and the k-group log-rank test, with numpy alone: the reference for
medtrain's survival figures. Usage: km_logrank.py COHORT.json, where the file holds "time", "event"
and "group" lists; prints JSON {"km": {group: [[time, survival], ...]}, "chi2", "df", "p"}."""
import json
import math
import sys

import numpy as np

cohort = json.load(open(sys.argv[1]))
time = np.asarray(cohort["time"], dtype=float)
event = np.asarray(cohort["event"], dtype=bool)
group = np.asarray(cohort["group"], dtype=int)
groups = np.unique(group)

km = {}
for g in groups:
    t, e = time[group == g], event[group == g]
    curve, s = [], 1.0
    for u in np.unique(t[e]):
        at_risk = np.sum(t >= u)
        deaths = np.sum((t == u) & e)
        s *= 1.0 - deaths / at_risk
        curve.append([float(u), float(s)])
    km[str(int(g))] = curve

# Observed minus expected events per group, and their hypergeometric covariance, over event times.
event_times = np.unique(time[event])
k = len(groups)
o_e = np.zeros(k)
cov = np.zeros((k, k))
for u in event_times:
    at_risk = np.array([np.sum((time >= u) & (group == g)) for g in groups], dtype=float)
    deaths = np.array([np.sum((time == u) & event & (group == g)) for g in groups], dtype=float)
    n, d = at_risk.sum(), deaths.sum()
    o_e += deaths - at_risk * d / n
    if n > 1:
        frac = at_risk / n
        cov += d * (n - d) / (n - 1) * (np.diag(frac) - np.outer(frac, frac))
chi2 = float(o_e[:-1] @ np.linalg.solve(cov[:-1, :-1], o_e[:-1]))
df = k - 1
if df == 1:
    p = math.erfc(math.sqrt(chi2 / 2))
elif df == 2:
    p = math.exp(-chi2 / 2)
else:
    raise SystemExit(f"df {df}: only 1 or 2 groups of difference are supported here")
print(json.dumps({"km": km, "chi2": chi2, "df": df, "p": p}))
