"""Catalog benchmark peers: the same planning queries on DuckDB (in memory) and SQLite (in memory,
with the indexes a careful user would add), over the same rows loaded straight from the shards
(h5py) and the label CSV, side by side with medtrain's figures (from `medtrain catalog bench`).

Usage: catalog_peers.py PACK_DIR KEY_FILE MEDTRAIN_BENCH_JSON [REPEAT]
Prints a Markdown table (p50 in ms per engine and the ratio to the faster peer) and checks that
every engine returns the same results before timing counts.
"""
import csv, hashlib, hmac, json, os, random, sqlite3, sys, time

import duckdb
import h5py
import numpy as np
import pandas as pd


def pseudonym(key, kind, value):
    return hmac.new(key, (kind + ":" + value.strip()).encode(), hashlib.sha256).hexdigest()[:32]


def load_rows(pack, key):
    index = json.load(open(os.path.join(pack, "index.json")))
    cols = {k: [] for k in ["series_id", "patient_key", "modality", "kernel", "series_thickness", "thickness",
                            "position", "instance_number", "slice_index"]}
    series_keys, base = [], 0
    for entry in index["shards"]:
        with h5py.File(os.path.join(pack, entry["file"]), "r") as f:
            s, sl = f["series"], f["slices"]
            n_slices = s["n_slices"][:].astype(np.int64)
            first = s["first_slice"][:].astype(np.int64)
            idx = sl["series_index"][:].astype(np.int64)
            series_keys.extend(k.decode() for k in s["series_key"][:])
            cols["series_id"].append(idx + base)
            cols["patient_key"].append(s["patient_key"][:][idx])
            cols["modality"].append(s["modality"][:][idx])
            cols["kernel"].append(s["convolution_kernel"][:][idx])
            cols["series_thickness"].append(s["slice_thickness"][:][idx])
            cols["thickness"].append(sl["thickness"][:])
            cols["position"].append(sl["position"][:])
            cols["instance_number"].append(sl["instance_number"][:])
            cols["slice_index"].append(np.arange(len(idx)) - first[idx])
            base += len(n_slices)
    data = {k: np.concatenate(v) for k, v in cols.items()}
    _, data["patient_id"] = np.unique(data.pop("patient_key"), return_inverse=True)
    data["modality"] = data["modality"].astype(str)
    data["kernel"] = data["kernel"].astype(str)
    # Nodule ranges by InstanceNumber from the clinical export, joined by pseudonymised series UID.
    sid = {k: i for i, k in enumerate(series_keys)}
    starts = np.searchsorted(data["series_id"], np.arange(len(series_keys)))
    nodule = np.zeros(len(data["series_id"]), dtype=np.int8)
    for r in csv.DictReader(open(os.path.join(pack, "slices_by_instance.csv"))):
        s = sid[pseudonym(key, "series", r["SeriesInstanceUID"])]
        lo, _, hi = r["InstanceNumber"].partition("-")
        a, b = starts[s], (starts[s + 1] if s + 1 < len(starts) else len(nodule))
        inst = data["instance_number"][a:b]
        nodule[a:b] |= ((inst >= int(lo)) & (inst <= int(hi or lo))).astype(np.int8) * int(r["Nodule"])
    data["nodule"] = nodule
    return pd.DataFrame(data), pd.DataFrame({"series_id": np.arange(len(series_keys)), "series_key": series_keys})


QUERIES = {
    "filtered_count": "SELECT count(*) FROM slices WHERE series_thickness <= 1.25 AND nodule = 1",
    "group_count_mean": "SELECT modality, kernel, count(*), avg(series_thickness) FROM slices "
                        "WHERE series_thickness <= 2.5 GROUP BY 1, 2 ORDER BY 1, 2",
    "top10_series_by_labelled_slices": "SELECT s.series_key, t.c FROM (SELECT series_id, count(*) AS c FROM slices "
                                       "WHERE nodule = 1 GROUP BY 1 ORDER BY c DESC LIMIT 10) t "
                                       "JOIN series s USING (series_id) ORDER BY t.c DESC",
    "slices_of_one_series": "SELECT slice_index, instance_number, position, thickness FROM slices "
                            "WHERE series_id = (SELECT series_id FROM series WHERE series_key = '{key}')",
    "distinct_patients_with_label": "SELECT count(DISTINCT patient_id) FROM slices WHERE nodule = 1",
}


def split(con, seed=1):
    """Stratified patient split: strata by SQL, assignment in Python, sample counts by SQL (a lower
    bound: medtrain also materialises every sample's row)."""
    rows = con.execute("SELECT patient_id, max(nodule) FROM slices WHERE series_thickness <= 2.5 GROUP BY 1").fetchall()
    rng = random.Random(seed)
    strata = {}
    for p, s in rows:
        strata.setdefault(s, []).append(p)
    assign = []
    for s in sorted(strata):
        ps = sorted(strata[s])
        rng.shuffle(ps)
        n = len(ps)
        a, b = round(n * 0.8), round(n * 0.9)
        assign += [(p, 0) for p in ps[:a]] + [(p, 1) for p in ps[a:b]] + [(p, 2) for p in ps[b:]]
    con.execute("DROP TABLE IF EXISTS assign")
    con.execute("CREATE TEMP TABLE assign (patient_id INTEGER, part INTEGER)")
    con.executemany("INSERT INTO assign VALUES (?, ?)", assign)
    return con.execute("SELECT part, count(*) FROM slices JOIN assign USING (patient_id) "
                       "WHERE series_thickness <= 2.5 GROUP BY 1 ORDER BY 1").fetchall()


def timed(f, repeat):
    result = f()
    ms = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    return ms[len(ms) // 2], result


def run_engine(con, one_series, repeat):
    out = {}
    for name, sql in QUERIES.items():
        sql = sql.format(key=one_series)
        reps = repeat if name != "group_count_mean" else max(3, repeat // 3)
        out[name] = timed(lambda: con.execute(sql).fetchall(), reps)
    out["stratified_split"] = timed(lambda: split(con), max(3, repeat // 5))
    return out


def main():
    pack, key_file, ours_file = sys.argv[1:4]
    repeat = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    key = bytes.fromhex(open(key_file).read().strip())
    ours = json.load(open(ours_file))
    one_series = next(q for q in ours["queries"] if q["name"] == "slices_of_one_series")["result"]["series_key"]
    t = time.perf_counter()
    slices, series = load_rows(pack, key)
    print(f"loaded {len(slices)} slices from shards in {time.perf_counter() - t:.1f} s", file=sys.stderr)

    duck = duckdb.connect(":memory:")
    duck.execute("SET threads TO 2")
    duck.execute("CREATE TABLE slices AS SELECT * FROM slices")
    duck.execute("CREATE TABLE series AS SELECT * FROM series")
    t = time.perf_counter()
    lite = sqlite3.connect(":memory:")
    lite.execute("CREATE TABLE slices (series_id INTEGER, modality TEXT, kernel TEXT, series_thickness REAL, "
                 "thickness REAL, position REAL, instance_number INTEGER, slice_index INTEGER, patient_id INTEGER, nodule INTEGER)")
    cols = ["series_id", "modality", "kernel", "series_thickness", "thickness", "position", "instance_number",
            "slice_index", "patient_id", "nodule"]
    lite.executemany("INSERT INTO slices VALUES (?,?,?,?,?,?,?,?,?,?)",
                     zip(*[slices[c].tolist() for c in cols]))
    lite.execute("CREATE TABLE series (series_id INTEGER PRIMARY KEY, series_key TEXT)")
    lite.executemany("INSERT INTO series VALUES (?, ?)", zip(series["series_id"].tolist(), series["series_key"].tolist()))
    for ddl in ["CREATE INDEX slices_series ON slices (series_id)",
                "CREATE INDEX slices_nodule ON slices (nodule, series_thickness, patient_id)",
                "CREATE INDEX slices_thickness ON slices (series_thickness, modality, kernel)",
                "CREATE UNIQUE INDEX series_key ON series (series_key)"]:
        lite.execute(ddl)
    lite.execute("ANALYZE")
    print(f"SQLite loaded and indexed in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    del slices

    engines = {"duckdb": run_engine(duck, one_series, repeat), "sqlite": run_engine(lite, one_series, repeat)}
    mine = {q["name"]: q for q in ours["queries"]}
    check(mine, engines)
    print(f"| query | medtrain p50 ms | DuckDB p50 ms | SQLite p50 ms | faster peer / medtrain |")
    print(f"|---|---:|---:|---:|---:|")
    for name in list(QUERIES) + ["stratified_split"]:
        m = mine[name]["p50_ms"]
        d, s = engines["duckdb"][name][0], engines["sqlite"][name][0]
        print(f"| {name} | {m:.3f} | {d:.2f} | {s:.2f} | {min(d, s) / m:.0f}x |")


def check(mine, engines):
    """The engines must agree with medtrain before their times mean anything."""
    for e, res in engines.items():
        count = mine["filtered_count"]["result"]["count"]
        assert res["filtered_count"][1][0][0] == count, (e, "filtered_count")
        assert res["distinct_patients_with_label"][1][0][0] == mine["distinct_patients_with_label"]["result"]["count"], e
        groups = {tuple(g["key"]): g["count"] for g in mine["group_count_mean"]["result"]["groups"]}
        assert {(r[0], r[1]): r[2] for r in res["group_count_mean"][1]} == groups, (e, "groups")
        top = sorted(g["count"] for g in mine["top10_series_by_labelled_slices"]["result"]["groups"])
        assert sorted(r[1] for r in res["top10_series_by_labelled_slices"][1]) == top, (e, "top10")
        assert len(res["slices_of_one_series"][1]) == mine["slices_of_one_series"]["result"]["rows"], (e, "series")
        total = sum(n for _, n in res["stratified_split"][1])
        assert total == sum(s[2] for s in mine["stratified_split"]["result"]), (e, "split samples")
    print("results agree across engines", file=sys.stderr)


if __name__ == "__main__":
    main()
