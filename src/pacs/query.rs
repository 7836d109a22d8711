//! Selecting what to fetch with QIDO-RS: studies by modality and date (or given study UIDs, or a
//! CSV of accession numbers / StudyInstanceUIDs), then the series of each study, filtered by
//! modality and series UIDs. The result is sorted by SeriesInstanceUID, so every run (and every
//! rank) sees the same order.

use super::client::{DicomWebClient, FetchError};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Results asked for per QIDO-RS request.
pub const PAGE_SIZE: usize = 100;

const TAG_STUDY_UID: &str = "0020000D";
const TAG_SERIES_UID: &str = "0020000E";
const TAG_MODALITY: &str = "00080060";
const TAG_SERIES_INSTANCES: &str = "00201209";

/// What to fetch. Empty fields do not filter.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SeriesQuery {
    /// Modality of the series (the study search uses ModalitiesInStudy).
    pub modality: Option<String>,
    /// StudyDate as QIDO-RS takes it: `YYYYMMDD` or a range `YYYYMMDD-YYYYMMDD`.
    pub study_date: Option<String>,
    #[serde(skip)]
    pub study_uids: Vec<String>,
    #[serde(skip)]
    pub series_uids: Vec<String>,
    /// CSV with a header row and an `AccessionNumber` or `StudyInstanceUID` column.
    pub query_csv: Option<PathBuf>,
}

/// One series to fetch.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct SeriesRef {
    pub study_uid: String,
    pub series_uid: String,
    pub modality: String,
    /// NumberOfSeriesRelatedInstances, when the archive reports it.
    pub instances: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("QIDO-RS search {what}: {source}")]
    Search { what: String, source: FetchError },
    #[error("query CSV {path}: {reason}")]
    Csv { path: PathBuf, reason: String },
    #[error("a QIDO-RS {what} result lacks {tag}")]
    Missing { what: &'static str, tag: &'static str },
}

impl QueryError {
    /// The search failure, when the archive answered one.
    pub fn fetch(&self) -> Option<&FetchError> {
        match self {
            QueryError::Search { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The first string value of a tag in a DICOM JSON object.
pub fn json_string(obj: &serde_json::Value, tag: &str) -> Option<String> {
    let v = obj.get(tag)?.get("Value")?.get(0)?;
    match v {
        serde_json::Value::String(s) => Some(s.trim().to_string()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Keys read from a query CSV.
#[derive(Debug, Default, PartialEq)]
pub struct CsvKeys {
    pub accession_numbers: Vec<String>,
    pub study_uids: Vec<String>,
}

/// Reads the `AccessionNumber` and/or `StudyInstanceUID` column of a CSV with a header row (commas;
/// values may be double-quoted; blank cells are skipped).
pub fn read_query_csv(path: &Path) -> Result<CsvKeys, QueryError> {
    let bad = |reason: String| QueryError::Csv {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = split_csv(lines.next().ok_or_else(|| bad("the file is empty".into()))?);
    let col = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (acc, uid) = (col("AccessionNumber"), col("StudyInstanceUID"));
    if acc.is_none() && uid.is_none() {
        return Err(bad(format!(
            "no AccessionNumber or StudyInstanceUID column in the header {header:?}"
        )));
    }
    let mut keys = CsvKeys::default();
    for line in lines {
        let cells = split_csv(line);
        let cell = |i: Option<usize>| i.and_then(|i| cells.get(i)).filter(|c| !c.is_empty()).cloned();
        if let Some(a) = cell(acc) {
            keys.accession_numbers.push(a);
        }
        if let Some(u) = cell(uid) {
            keys.study_uids.push(u);
        }
    }
    Ok(keys)
}

fn split_csv(line: &str) -> Vec<String> {
    line.split(',')
        .map(|c| c.trim().trim_matches('"').trim().to_string())
        .collect()
}

fn search(
    client: &DicomWebClient,
    what: &str,
    path: &str,
    params: &[(&str, String)],
) -> Result<Vec<serde_json::Value>, QueryError> {
    client
        .search(path, params, PAGE_SIZE)
        .map_err(|source| QueryError::Search {
            what: what.to_string(),
            source,
        })
}

fn series_ref(obj: &serde_json::Value, study_uid: Option<&str>) -> Result<SeriesRef, QueryError> {
    let study_uid = json_string(obj, TAG_STUDY_UID)
        .or_else(|| study_uid.map(str::to_string))
        .ok_or(QueryError::Missing {
            what: "series",
            tag: "StudyInstanceUID (0020000D)",
        })?;
    let series_uid = json_string(obj, TAG_SERIES_UID).ok_or(QueryError::Missing {
        what: "series",
        tag: "SeriesInstanceUID (0020000E)",
    })?;
    Ok(SeriesRef {
        study_uid,
        series_uid,
        modality: json_string(obj, TAG_MODALITY).unwrap_or_default(),
        instances: json_string(obj, TAG_SERIES_INSTANCES).and_then(|n| n.parse().ok()),
    })
}

/// The studies the query selects (UIDs).
fn find_studies(client: &DicomWebClient, q: &SeriesQuery) -> Result<BTreeSet<String>, QueryError> {
    let mut studies: BTreeSet<String> = q.study_uids.iter().cloned().collect();
    let mut searches: Vec<Vec<(&str, String)>> = Vec::new();
    if let Some(path) = &q.query_csv {
        let keys = read_query_csv(path)?;
        studies.extend(keys.study_uids);
        for a in keys.accession_numbers {
            searches.push(vec![("AccessionNumber", a)]);
        }
    } else if q.study_uids.is_empty() {
        searches.push(Vec::new());
    }
    for mut params in searches {
        if let Some(m) = &q.modality {
            params.push(("ModalitiesInStudy", m.clone()));
        }
        if let Some(d) = &q.study_date {
            params.push(("StudyDate", d.clone()));
        }
        for obj in search(client, "of studies", "/studies", &params)? {
            studies.insert(json_string(&obj, TAG_STUDY_UID).ok_or(QueryError::Missing {
                what: "study",
                tag: "StudyInstanceUID (0020000D)",
            })?);
        }
    }
    Ok(studies)
}

/// Every series the query selects, sorted by SeriesInstanceUID.
pub fn find_series(client: &DicomWebClient, q: &SeriesQuery) -> Result<Vec<SeriesRef>, QueryError> {
    let wanted: BTreeSet<&String> = q.series_uids.iter().collect();
    let only_series = !wanted.is_empty()
        && q.study_uids.is_empty()
        && q.query_csv.is_none()
        && q.modality.is_none()
        && q.study_date.is_none();
    let mut found: BTreeMap<String, SeriesRef> = BTreeMap::new();
    if only_series {
        for uid in &q.series_uids {
            let params = [("SeriesInstanceUID", uid.clone())];
            for obj in search(client, "of a series", "/series", &params)? {
                let s = series_ref(&obj, None)?;
                found.insert(s.series_uid.clone(), s);
            }
        }
    } else {
        for study in find_studies(client, q)? {
            let mut params = Vec::new();
            if let Some(m) = &q.modality {
                params.push(("Modality", m.clone()));
            }
            let path = format!("/studies/{}/series", super::client::encode_query(&study));
            for obj in search(client, "of a study's series", &path, &params)? {
                let s = series_ref(&obj, Some(&study))?;
                found.insert(s.series_uid.clone(), s);
            }
        }
    }
    Ok(found
        .into_values()
        .filter(|s| wanted.is_empty() || wanted.contains(&s.series_uid))
        .filter(|s| match &q.modality {
            // Archives that ignore the series-level filter still get it applied.
            Some(m) => s.modality.is_empty() || s.modality.eq_ignore_ascii_case(m),
            None => true,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dicom_json_values_and_csv_columns() {
        let obj: serde_json::Value = serde_json::from_str(
            r#"{"0020000E":{"vr":"UI","Value":["1.2.3"]},"00201209":{"vr":"IS","Value":[12]},"00080060":{"vr":"CS"}}"#,
        )
        .unwrap();
        let s = series_ref(&obj, Some("9.9")).unwrap();
        assert_eq!(s.series_uid, "1.2.3");
        assert_eq!(s.study_uid, "9.9");
        assert_eq!(s.instances, Some(12));
        assert_eq!(s.modality, "");
        assert!(series_ref(&obj, None).is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.csv");
        std::fs::write(
            &path,
            "patient,\"AccessionNumber\",StudyInstanceUID\nx,A1,\ny,,1.2.840.5\n\n",
        )
        .unwrap();
        let keys = read_query_csv(&path).unwrap();
        assert_eq!(keys.accession_numbers, vec!["A1"]);
        assert_eq!(keys.study_uids, vec!["1.2.840.5"]);
        std::fs::write(&path, "a,b\n1,2\n").unwrap();
        assert!(matches!(read_query_csv(&path), Err(QueryError::Csv { .. })));
    }
}
