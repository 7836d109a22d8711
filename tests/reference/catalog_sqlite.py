"""Independent reference for `catalog query`: loads the shards with h5py and the clinical CSVs
with the csv module into SQLite (pseudonymising identifiers with the site key by HMAC-SHA256,
as the pack format documents), runs the SQL twin of each catalog query and prints JSON.

Usage: catalog_sqlite.py PACK_DIR CSV_DIR KEY_FILE  ->  {"name": {"count": n} | {"groups": [...]}}
Group rows are [key..., count, mean...] with keys as strings (NULL as "null", booleans as 1/0).
"""
import csv, hashlib, hmac, json, math, os, sqlite3, sys

import h5py

DEATH_HORIZON_DAYS = 1826


def pseudonym(key, kind, value):
    return hmac.new(key, (kind + ":" + value.strip()).encode(), hashlib.sha256).hexdigest()[:32]


def text(cell):
    return cell.decode() if isinstance(cell, bytes) else str(cell)


def num(x):
    x = float(x)
    return None if math.isnan(x) else x


def cell(v):
    return None if v.strip().upper() in ("", "NA") else v.strip()


def load(db, pack, csv_dir, key):
    db.executescript("""
        CREATE TABLE series(shard INT, srow INT, series_key TEXT, patient_key TEXT, modality TEXT,
                            slice_thickness REAL, kernel TEXT, n_slices INT);
        CREATE TABLE slices(shard INT, srow INT, position REAL, thickness REAL, sop_key TEXT,
                            instance_number INT);
        CREATE TABLE pt(patient_key TEXT PRIMARY KEY, followup REAL, death INT, nodule_count INT,
                        max_diameter REAL, death_5y INT);
        CREATE TABLE ser(series_key TEXT PRIMARY KEY, nodule INT);
        CREATE TABLE sop(sop_key TEXT PRIMARY KEY, nodule INT);
        CREATE TABLE inst(series_key TEXT, lo INT, hi INT, nodule INT);
    """)
    index = json.load(open(os.path.join(pack, "index.json")))
    for k, entry in enumerate(index["shards"]):
        with h5py.File(os.path.join(pack, entry["file"]), "r") as f:
            s = f["series"]
            for i in range(s["series_key"].shape[0]):
                db.execute("INSERT INTO series VALUES (?,?,?,?,?,?,?,?)", (
                    k, i, text(s["series_key"][i]), text(s["patient_key"][i]), text(s["modality"][i]),
                    num(s["slice_thickness"][i]), text(s["convolution_kernel"][i]), int(s["n_slices"][i])))
            sl = f["slices"]
            for j in range(sl["series_index"].shape[0]):
                db.execute("INSERT INTO slices VALUES (?,?,?,?,?,?)", (
                    k, int(sl["series_index"][j]), num(sl["position"][j]), num(sl["thickness"][j]),
                    text(sl["sop_key"][j]), int(sl["instance_number"][j])))
    rows = lambda name: list(csv.DictReader(open(os.path.join(csv_dir, name))))
    for r in rows("patients.csv"):
        follow, death = float(r["FollowUpDays"]), int(r["Death"])
        d5 = 1 if death and follow <= DEATH_HORIZON_DAYS else (0 if follow >= DEATH_HORIZON_DAYS else None)
        diameter = cell(r["MaxNoduleDiameterMM"])
        db.execute("INSERT INTO pt VALUES (?,?,?,?,?,?)", (
            pseudonym(key, "patient", r["PatientID"]), follow, death, int(r["NoduleCount"]),
            None if diameter is None else float(diameter), d5))
    for r in rows("series.csv"):
        db.execute("INSERT INTO ser VALUES (?,?)", (pseudonym(key, "series", r["SeriesInstanceUID"]), int(r["Nodule"])))
    for r in rows("slices_by_sop.csv"):
        v = cell(r["Nodule"])
        db.execute("INSERT INTO sop VALUES (?,?)", (pseudonym(key, "instance", r["SOPInstanceUID"]), None if v is None else int(v)))
    for r in rows("slices_by_instance.csv"):
        lo, _, hi = r["InstanceNumber"].partition("-")
        db.execute("INSERT INTO inst VALUES (?,?,?,?)", (
            pseudonym(key, "series", r["SeriesInstanceUID"]), int(lo), int(hi or lo), int(r["Nodule"])))
    db.executescript("""
        CREATE VIEW s AS SELECT sl.*, r.series_key, r.patient_key, r.modality, r.slice_thickness, r.kernel
            FROM slices sl JOIN series r ON r.shard = sl.shard AND r.srow = sl.srow;
        CREATE VIEW si AS SELECT s.*, i.nodule AS inst_nodule FROM s LEFT JOIN inst i
            ON i.series_key = s.series_key AND s.instance_number BETWEEN i.lo AND i.hi;
    """)


QUERIES = {
    "thin": "SELECT COUNT(*) FROM s WHERE slice_thickness <= 1.25",
    "thin_nodule": "SELECT COUNT(*) FROM s JOIN sop USING (sop_key) WHERE slice_thickness <= 1.25 AND sop.nodule = 1",
    "sop_false_or_low_instance": "SELECT COUNT(*) FROM s LEFT JOIN sop USING (sop_key) WHERE sop.nodule = 0 OR instance_number BETWEEN 1 AND 3",
    "sop_unknown": "SELECT COUNT(*) FROM s JOIN sop USING (sop_key) WHERE sop.nodule IS NULL",
    "patients_with_nodule": "SELECT COUNT(DISTINCT patient_key) FROM s JOIN sop USING (sop_key) WHERE sop.nodule = 1",
    "death5_unknown": "SELECT COUNT(*) FROM pt WHERE death_5y IS NULL AND patient_key IN (SELECT patient_key FROM series)",
    "death5_true": "SELECT COUNT(*) FROM pt WHERE death_5y = 1",
    "death5_absent": "SELECT COUNT(DISTINCT patient_key) FROM series WHERE patient_key NOT IN (SELECT patient_key FROM pt)",
    "not_thick_ct": "SELECT COUNT(*) FROM series WHERE NOT (slice_thickness > 1) AND modality = 'CT'",
    "series_by_patient_labels": "SELECT COUNT(*) FROM series JOIN pt USING (patient_key) WHERE pt.max_diameter > 5 OR pt.nodule_count = 0",
    "inst_nodule_slices": "SELECT COUNT(*) FROM si WHERE inst_nodule = 1",
    "groups_modality_kernel": ("SELECT modality, kernel, COUNT(*), AVG(slice_thickness) FROM s JOIN ser USING (series_key) "
                               "WHERE ser.nodule = 1 GROUP BY 1, 2"),
    "groups_per_series": "SELECT series_key, COUNT(*) FROM si WHERE inst_nodule = 1 GROUP BY 1",
    "groups_slice_key": "SELECT inst_nodule, COUNT(*), AVG(position) FROM si GROUP BY 1",
    "groups_patient_death": ("SELECT pt.death, COUNT(DISTINCT series.patient_key) FROM series LEFT JOIN pt USING (patient_key) "
                             "WHERE modality = 'MR' GROUP BY 1"),
}


def main():
    pack, csv_dir, key_file = sys.argv[1:4]
    key = bytes.fromhex(open(key_file).read().strip())
    db = sqlite3.connect(":memory:")
    load(db, pack, csv_dir, key)
    out = {}
    for name, sql in QUERIES.items():
        rows = db.execute(sql).fetchall()
        if name.startswith("groups_"):
            n_keys = {"groups_modality_kernel": 2}.get(name, 1)
            groups = []
            for r in rows:
                keys = ["null" if v is None else str(v) for v in r[:n_keys]]
                groups.append(keys + list(r[n_keys:]))
            out[name] = {"groups": sorted(groups, key=lambda g: [str(x) for x in g])}
        else:
            out[name] = {"count": rows[0][0]}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
