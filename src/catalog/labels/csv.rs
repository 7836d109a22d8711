//! A small CSV reader for clinical exports: comma or semicolon separated (taken from the header),
//! double-quoted fields with `""` escapes, a header row, and the 1-based line number of every
//! record so that import errors point at the line to fix.

/// One data record with the file line it starts on.
pub struct Record {
    pub line: usize,
    pub fields: Vec<String>,
}

pub struct Table {
    pub header: Vec<String>,
    pub records: Vec<Record>,
}

/// Parses `text`; `Err((line, reason))` on an unterminated quote or a ragged record.
pub fn parse(text: &str) -> Result<Table, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first = text.lines().next().unwrap_or("");
    let sep = if first.matches(';').count() > first.matches(',').count() {
        ';'
    } else {
        ','
    };
    let mut records = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let start = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        loop {
            match chars.next() {
                None if quoted => return Err((start, "unterminated quoted field".into())),
                None => {
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                Some('"') if quoted && chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                Some('"') if quoted => quoted = false,
                Some('"') if field.trim().is_empty() => {
                    field.clear();
                    quoted = true
                }
                Some('\n') if !quoted => {
                    line += 1;
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                Some('\r') if !quoted => {}
                Some(c) if c == sep && !quoted => fields.push(std::mem::take(&mut field)),
                Some(c) => {
                    if c == '\n' {
                        line += 1;
                    }
                    field.push(c)
                }
            }
        }
        if fields.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        records.push(Record {
            line: start,
            fields: fields.into_iter().map(|f| f.trim().to_string()).collect(),
        });
    }
    if records.is_empty() {
        return Err((1, "no header row".into()));
    }
    let header = records.remove(0).fields;
    for r in &records {
        if r.fields.len() != header.len() {
            return Err((
                r.line,
                format!("{} fields, but the header has {}", r.fields.len(), header.len()),
            ));
        }
    }
    Ok(Table { header, records })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_separators_and_line_numbers() {
        let t = parse("a,b\n1,\"x, \"\"y\"\"\"\n\n2,\"multi\nline\"\n3,z\n").unwrap();
        assert_eq!(t.header, vec!["a", "b"]);
        assert_eq!(t.records[0].fields, vec!["1", "x, \"y\""]);
        assert_eq!(t.records[1].line, 4);
        assert_eq!(t.records[1].fields[1], "multi\nline");
        assert_eq!(t.records[2].line, 6);
        let t = parse("a;b\n1,5;2\n").unwrap();
        assert_eq!(t.records[0].fields, vec!["1,5", "2"]);
        assert_eq!(parse("a,b\n1\n").err().unwrap().0, 2);
        assert!(parse("a\n\"open\n").is_err());
    }
}
