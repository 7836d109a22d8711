//! LIDC-IDRI annotation XML (`LidcReadMessage`): per reading session (one radiologist), the nodules
//! they outlined (`unblindedReadNodule`: characteristics and one ROI per slice, by `imageSOP_UID`,
//! with an `edgeMap` outline in pixel coordinates and an `inclusion` flag; exclusions cut holes).
//! Non-nodules and sessions without outlines are read as readers who marked nothing. Errors name the
//! element (its path and line).

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub struct LidcRead {
    pub series_uid: String,
    pub readers: Vec<Reader>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Reader {
    /// `servicingRadiologistID` (anonymised in LIDC), or its 1-based session number.
    pub id: String,
    pub nodules: Vec<Nodule>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Nodule {
    pub id: String,
    /// `characteristics` children with numeric values (malignancy, subtlety, ...).
    pub characteristics: BTreeMap<String, f64>,
    pub rois: Vec<Roi>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Roi {
    /// Line of the `<roi>` element in the file.
    pub line: u32,
    pub sop_uid: String,
    /// false: an exclusion (a hole cut out of the nodule on this slice).
    pub inclusion: bool,
    /// Outline vertices (x = column, y = row), pixel centres at integers.
    pub points: Vec<(f64, f64)>,
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.tag_name().name() == name)
}

fn text<'a>(n: roxmltree::Node<'a, '_>) -> &'a str {
    n.text().unwrap_or("").trim()
}

/// Parses the text of one LIDC XML file.
pub fn parse(xml: &str) -> Result<LidcRead, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "LidcReadMessage" {
        return Err(format!(
            "root element is <{}>, not <LidcReadMessage>",
            root.tag_name().name()
        ));
    }
    let at = |n: roxmltree::Node| format!("line {}", doc.text_pos_at(n.range().start).row);
    let header = child(root, "ResponseHeader").ok_or("no <ResponseHeader>")?;
    let series_uid = ["SeriesInstanceUid", "SeriesInstanceUID"]
        .iter()
        .find_map(|t| child(header, t))
        .map(text)
        .filter(|t| !t.is_empty())
        .ok_or("<ResponseHeader> has no <SeriesInstanceUid>")?
        .to_string();
    let mut readers = Vec::new();
    for (s, session) in root
        .children()
        .filter(|c| c.tag_name().name() == "readingSession")
        .enumerate()
    {
        let id = child(session, "servicingRadiologistID")
            .map(text)
            .filter(|t| !t.is_empty())
            .map_or_else(|| format!("session {}", s + 1), str::to_string);
        let mut nodules = Vec::new();
        for nodule in session
            .children()
            .filter(|c| c.tag_name().name() == "unblindedReadNodule")
        {
            let nid = child(nodule, "noduleID").map(text).unwrap_or("").to_string();
            let mut characteristics = BTreeMap::new();
            if let Some(ch) = child(nodule, "characteristics") {
                for c in ch.children().filter(|c| c.is_element()) {
                    let v = text(c);
                    let value = v.parse::<f64>().map_err(|_| {
                        format!(
                            "{}: <{}> of nodule {nid:?} is {v:?}, not a number",
                            at(c),
                            c.tag_name().name()
                        )
                    })?;
                    characteristics.insert(c.tag_name().name().to_string(), value);
                }
            }
            let mut rois = Vec::new();
            for roi in nodule.children().filter(|c| c.tag_name().name() == "roi") {
                let sop = child(roi, "imageSOP_UID")
                    .map(text)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| format!("{}: <roi> of nodule {nid:?} has no <imageSOP_UID>", at(roi)))?;
                let inclusion = match child(roi, "inclusion").map(|i| text(i).to_ascii_uppercase()) {
                    None => true,
                    Some(t) if t == "TRUE" => true,
                    Some(t) if t == "FALSE" => false,
                    Some(t) => return Err(format!("{}: <inclusion> is {t:?}, not TRUE or FALSE", at(roi))),
                };
                let mut points = Vec::new();
                for e in roi.children().filter(|c| c.tag_name().name() == "edgeMap") {
                    let coord = |name: &str| -> Result<f64, String> {
                        let c =
                            child(e, name).ok_or_else(|| format!("{}: <edgeMap> has no <{name}>", at(e)))?;
                        text(c)
                            .parse::<f64>()
                            .ok()
                            .filter(|v| v.is_finite())
                            .ok_or_else(|| format!("{}: <{name}> is {:?}, not a number", at(c), text(c)))
                    };
                    points.push((coord("xCoord")?, coord("yCoord")?));
                }
                if points.is_empty() {
                    return Err(format!("{}: <roi> of nodule {nid:?} has no <edgeMap>", at(roi)));
                }
                rois.push(Roi {
                    line: doc.text_pos_at(roi.range().start).row,
                    sop_uid: sop.to_string(),
                    inclusion,
                    points,
                });
            }
            nodules.push(Nodule {
                id: nid,
                characteristics,
                rois,
            });
        }
        readers.push(Reader { id, nodules });
    }
    Ok(LidcRead { series_uid, readers })
}

/// Pixels of a (rows, cols) image whose centres lie strictly inside the outline by the even-odd
/// rule (a centre exactly on an edge is outside: LIDC's readers draw the outline just outside the
/// nodule). One vertex alone (LIDC's mark of a nodule under 3 mm) labels its own pixel.
pub fn rasterise(points: &[(f64, f64)], rows: usize, cols: usize) -> Vec<bool> {
    let mut out = vec![false; rows * cols];
    if points.len() == 1 {
        let (x, y) = (points[0].0.round(), points[0].1.round());
        if x >= 0.0 && y >= 0.0 && (x as usize) < cols && (y as usize) < rows {
            out[y as usize * cols + x as usize] = true;
        }
        return out;
    }
    let n = points.len();
    let edges: Vec<((f64, f64), (f64, f64))> = (0..n).map(|i| (points[i], points[(i + 1) % n])).collect();
    let on_edge = |px: f64, py: f64| {
        edges.iter().any(|&((x0, y0), (x1, y1))| {
            let cross = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0);
            cross.abs() <= 1e-9 * (1.0 + (x1 - x0).abs() + (y1 - y0).abs())
                && px >= x0.min(x1) - 1e-9
                && px <= x0.max(x1) + 1e-9
                && py >= y0.min(y1) - 1e-9
                && py <= y0.max(y1) + 1e-9
        })
    };
    let (ymin, ymax) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
        (a.0.min(p.1), a.1.max(p.1))
    });
    let r0 = ymin.ceil().max(0.0) as usize;
    let r1 = (ymax.floor() as i64).min(rows as i64 - 1);
    for r in r0..=r1.max(-1) as usize {
        if r1 < 0 {
            break;
        }
        let y = r as f64;
        let mut xs: Vec<f64> = edges
            .iter()
            .filter(|&&((_, y0), (_, y1))| (y0 <= y) != (y1 <= y))
            .map(|&((x0, y0), (x1, y1))| x0 + (y - y0) * (x1 - x0) / (y1 - y0))
            .collect();
        xs.sort_by(f64::total_cmp);
        for pair in xs.chunks_exact(2) {
            let c0 = pair[0].ceil().max(0.0) as usize;
            let c1 = (pair[1].floor() as i64).min(cols as i64 - 1);
            if c1 < 0 {
                continue;
            }
            for c in c0..=c1 as usize {
                if !on_edge(c as f64, y) {
                    out[r * cols + c] = true;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_square_outline_labels_its_interior_and_a_star_its_even_odd_parts() {
        // Outline through pixel centres (1,1)-(4,1)-(4,4)-(1,4): the interior is the 2×2 block inside.
        let sq = rasterise(&[(1.0, 1.0), (4.0, 1.0), (4.0, 4.0), (1.0, 4.0)], 6, 6);
        let inside: Vec<usize> = (0..36).filter(|&i| sq[i]).collect();
        assert_eq!(inside, vec![14, 15, 20, 21]);
        // A pentagram: its centre is crossed twice (even) and so outside; its points are inside.
        let star: Vec<(f64, f64)> = (0..5)
            .map(|k| {
                let a = std::f64::consts::PI * (0.5 + 0.8 * k as f64);
                (10.3 + 9.0 * a.cos(), 10.2 - 9.0 * a.sin())
            })
            .collect();
        let m = rasterise(&star, 21, 21);
        assert!(!m[10 * 21 + 10] && m[3 * 21 + 10]);
        assert_eq!(rasterise(&[(2.0, 3.0)], 5, 5).iter().filter(|&&v| v).count(), 1);
    }

    #[test]
    fn xml_errors_name_the_element() {
        let ok = r#"<LidcReadMessage xmlns="http://www.nih.gov"><ResponseHeader><SeriesInstanceUid>1.2.3</SeriesInstanceUid></ResponseHeader>
<readingSession><servicingRadiologistID>r1</servicingRadiologistID><unblindedReadNodule><noduleID>N1</noduleID>
<characteristics><malignancy>4</malignancy></characteristics><roi><imageSOP_UID>1.2.3.4</imageSOP_UID><inclusion>TRUE</inclusion>
<edgeMap><xCoord>1</xCoord><yCoord>2</yCoord></edgeMap></roi></unblindedReadNodule></readingSession></LidcReadMessage>"#;
        let read = parse(ok).unwrap();
        assert_eq!(read.series_uid, "1.2.3");
        assert_eq!(read.readers[0].nodules[0].characteristics["malignancy"], 4.0);
        let bad = ok.replace("<yCoord>2</yCoord>", "<yCoord>two</yCoord>");
        assert!(
            parse(&bad).unwrap_err().contains("line 4: <yCoord> is \"two\""),
            "{}",
            parse(&bad).unwrap_err()
        );
        assert!(parse("<a/>").unwrap_err().contains("not <LidcReadMessage>"));
    }
}
