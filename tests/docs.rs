//! The documentation: the config reference in `docs/src/config.md` is what the config structs
//! generate, every config key is described, and every internal link and anchor of README.md and the
//! manual (`docs/src/**/*.md`) resolves, so CI needs no mdbook.

use medtrain::config_reference::render::{inline_toml, render, slug};
use medtrain::config_reference::{enum_variants, problems, struct_fields, REGENERATE, SECTIONS};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn config_reference_is_generated_and_current() {
    let path = root().join("docs/src/config.md");
    let generated = render();
    if std::env::var_os("MEDTRAIN_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} differs from what the config structs generate; regenerate it with\n  {REGENERATE}\n\
         and commit it",
        path.display()
    );
}

#[test]
fn every_config_key_is_documented() {
    let p = problems();
    assert!(
        p.is_empty(),
        "describe these in src/config_reference.rs (SECTIONS):\n  {}",
        p.join("\n  ")
    );
}

/// A page's text; the config reference as the code generates it (the test above checks that the
/// committed page is the same, and may be rewriting it while this runs).
fn read_page(path: &Path) -> String {
    if path.ends_with("docs/src/config.md") {
        return render();
    }
    std::fs::read_to_string(path).unwrap()
}

/// README.md and every Markdown file under docs/src.
fn pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut out = vec![root().join("README.md")];
    walk(&root().join("docs/src"), &mut out);
    out.sort();
    out
}

/// The text outside fenced code blocks, line by line, with inline code spans blanked.
fn prose(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut kept = String::new();
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
                kept.push(c);
            } else if in_code {
                kept.push(' ');
            } else {
                kept.push(c);
            }
        }
        out.push(kept);
    }
    out
}

/// The anchors of a Markdown file's headings, numbered like GitHub and mdBook number repeats.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let Some(heading) = (!fenced)
            .then(|| line.strip_prefix('#'))
            .flatten()
            .map(|h| h.trim_start_matches('#'))
            .filter(|h| h.starts_with(' '))
        else {
            continue;
        };
        // Link text only: `[text](url)` → `text`.
        let mut plain = String::new();
        let mut rest = heading.trim();
        while let Some(open) = rest.find("](") {
            plain.push_str(&rest[..open]);
            rest = rest[open + 2..].split_once(')').map_or("", |(_, r)| r);
        }
        plain.push_str(rest);
        let base = slug(plain.trim());
        let mut id = base.clone();
        let mut n = 0;
        while seen.contains(&id) {
            n += 1;
            id = format!("{base}-{n}");
        }
        seen.insert(id);
    }
    seen
}

/// The link targets of a line: `[text](target)` and `![alt](target)`, and `[label]: target`.
fn targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let mut depth = 0;
        let end = after
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => return true,
                    ')' => depth -= 1,
                    _ => {}
                }
                false
            })
            .map_or(after.len(), |(j, _)| j);
        let target = after[..end].split_whitespace().next().unwrap_or("");
        out.push(target.trim_matches(|c| c == '<' || c == '>').to_string());
        rest = &after[end..];
    }
    let t = line.trim_start();
    if t.starts_with('[') {
        if let Some((label, target)) = t.split_once("]: ") {
            if !label.contains('(') {
                out.push(target.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    }
    out
}

#[test]
fn internal_links_and_anchors_resolve() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = read_page(&page);
        let name = page.strip_prefix(root()).unwrap().display().to_string();
        for (n, line) in prose(&text).iter().enumerate() {
            for target in targets(line) {
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (file, anchor) = match target.split_once('#') {
                    Some((f, a)) => (f, Some(a)),
                    None => (target.as_str(), None),
                };
                let dest = if file.is_empty() {
                    page.clone()
                } else {
                    page.parent().unwrap().join(file)
                };
                let at = format!("{name}:{}: {target}", n + 1);
                if !dest.exists() {
                    broken.push(format!("{at}: no file {}", dest.display()));
                    continue;
                }
                if let Some(anchor) = anchor {
                    if dest.extension().is_none_or(|e| e != "md") {
                        broken.push(format!("{at}: an anchor into a file that is not Markdown"));
                        continue;
                    }
                    let text = read_page(&dest);
                    if !anchors(&text).contains(anchor) {
                        broken.push(format!("{at}: no heading with the anchor #{anchor}"));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n  {}", broken.join("\n  "));
    assert!(
        checked > 20,
        "only {checked} internal links found: is the parser broken?"
    );
}

/// Every page of the manual is in SUMMARY.md, so mdBook renders it.
#[test]
fn every_manual_page_is_in_the_summary() {
    let src = root().join("docs/src");
    let summary = std::fs::read_to_string(src.join("SUMMARY.md")).unwrap();
    let listed: BTreeSet<String> = summary.lines().flat_map(targets).collect();
    let missing: Vec<String> = pages()
        .into_iter()
        .filter_map(|p| p.strip_prefix(&src).ok().map(|p| p.display().to_string()))
        .filter(|p| p != "SUMMARY.md" && !listed.contains(p))
        .collect();
    assert!(missing.is_empty(), "not in docs/src/SUMMARY.md: {missing:?}");
}

#[test]
fn link_parser_finds_links_and_anchors() {
    assert_eq!(
        targets("see [a](x.md#b-c) and ![i](../y.png \"t\") and `[c](z)`"),
        ["x.md#b-c", "../y.png", "z"]
    );
    assert_eq!(
        prose("a `[c](z)` b\n```\n[d](e)\n```\n")
            .iter()
            .flat_map(|l| targets(l))
            .count(),
        0
    );
    let a = anchors("# Top\n## `pack --from` [link](u)\n## Top\n```\n# not\n```\n");
    assert_eq!(
        a,
        ["pack---from-link", "top", "top-1"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

#[test]
fn probe_reads_fields_and_variants() {
    use medtrain::catalog::cli::ColumnConfig;
    use medtrain::config::Config;
    use medtrain::data::sampler::SamplerMode;
    assert_eq!(
        struct_fields::<ColumnConfig>(),
        &["name", "column", "type"],
        "renamed fields appear under their TOML name"
    );
    assert_eq!(enum_variants::<SamplerMode>(), &["global", "shard-local"]);
    assert!(struct_fields::<Config>().contains(&"stage"));
}

/// Defaults that live outside the config structs, written in `SECTIONS` by hand.
#[test]
fn hand_written_defaults_match_the_code() {
    let pack = SECTIONS.iter().find(|s| s.header == "[pack]").unwrap();
    let note = pack
        .keys
        .iter()
        .find(|k| k.name == "shard_size")
        .unwrap()
        .default_note;
    let text = note.unwrap().trim_matches('`');
    assert_eq!(
        medtrain::config::parse_size("shard_size", text).unwrap(),
        medtrain::pack::run::DEFAULT_SHARD_BYTES
    );
}

#[test]
fn floats_print_as_written() {
    assert_eq!(inline_toml(&toml::Value::Float(2e-3f32 as f64)), "0.002");
    assert_eq!(inline_toml(&toml::Value::Float(0.95)), "0.95");
    assert_eq!(inline_toml(&toml::Value::Float(1e-8f32 as f64)), "1e-8");
}

#[test]
fn slugs_match_github() {
    assert_eq!(slug("[data.augment]"), "dataaugment");
    assert_eq!(
        slug("`pack --from`: a DICOMweb archive"),
        "pack---from-a-dicomweb-archive"
    );
}
