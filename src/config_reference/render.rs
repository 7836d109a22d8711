//! The config reference as Markdown (`docs/src/config.md`): one table per section of
//! [`SECTIONS`], with each key's type, default and description.

use super::{Key, Section, REGENERATE, SECTIONS};

/// A TOML value as it would be written inline in a config file. Floats print in their shortest
/// form as `f32` when they are exactly an `f32` (most settings are `f32`, which TOML widens).
pub fn inline_toml(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => {
            if (*f as f32) as f64 == *f {
                format!("{:?}", *f as f32)
            } else {
                format!("{f:?}")
            }
        }
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(a) => {
            let items: Vec<String> = a.iter().map(inline_toml).collect();
            format!("[{}]", items.join(", "))
        }
        toml::Value::Table(t) => {
            // A tag (`kind`, of internally tagged enums) first, as one would write it.
            let mut entries: Vec<_> = t.iter().collect();
            entries.sort_by_key(|(k, _)| k.as_str() != "kind");
            let items: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{k} = {}", inline_toml(v)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
    }
}

/// Text for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The default shown for key `k` of section `s`.
fn default_cell(s: &Section, k: &Key) -> String {
    let value = s.defaults.map(|d| d()).and_then(|t| t.get(k.name).cloned());
    match (value, k.default_note) {
        (Some(toml::Value::Table(_)), _) if k.ty == "table" => "its table's defaults".into(),
        (Some(v), _) => format!("`{}`", inline_toml(&v)),
        (None, Some(note)) => note.into(),
        (None, None) => "unset".into(),
    }
}

/// The whole reference page (Markdown), as committed in `docs/src/config.md`.
pub fn render() -> String {
    let mut md = String::new();
    md.push_str("# Config reference\n\n");
    md.push_str(&format!(
        "<!-- Generated from the config structs (src/config_reference.rs); do not edit.\n     \
         Regenerate with: {REGENERATE} -->\n\n"
    ));
    md.push_str(
        "Every verb that takes `--config FILE` reads its own tables of one TOML file and ignores the \
         others, so one file can hold a whole experiment (`configs/smoke.toml` is the quick start's). \
         Unknown keys are errors that name the key; values are checked before any work starts \
         (errors name the key); command-line flags override the file. A key left out takes the \
         default below; \"unset\" means the key has no value unless given, with the meaning its \
         description states.\n\n",
    );
    md.push_str("Tables:");
    for (i, s) in SECTIONS.iter().enumerate() {
        md.push_str(if i == 0 { " " } else { ", " });
        md.push_str(&format!("[`{}`](#{})", s.header, slug(s.header)));
    }
    md.push_str(".\n");
    for s in SECTIONS {
        md.push_str(&format!("\n## {}\n\n{}\n\n", s.header, s.about));
        md.push_str("| Key | Type | Default | Description |\n|---|---|---|---|\n");
        for f in (s.fields)() {
            let Some(k) = s.keys.iter().find(|k| k.name == *f) else {
                md.push_str(&format!("| `{f}` | ? | ? | (undocumented) |\n"));
                continue;
            };
            let mut ty = k.ty.to_string();
            if let Some(choices) = k.choices {
                let names: Vec<String> = choices().iter().map(|c| format!("`{c}`")).collect();
                ty.push_str(&format!(": {}", names.join(", ")));
            }
            md.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                k.name,
                cell(&ty),
                cell(&default_cell(s, k)),
                cell(k.doc)
            ));
        }
    }
    md
}

/// The anchor GitHub and mdBook give a heading: lower case; letters, digits, `_` and `-` kept;
/// spaces become `-`; everything else dropped.
pub fn slug(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_lowercase().collect::<String>())
            } else if c == ' ' {
                Some("-".into())
            } else {
                None
            }
        })
        .collect()
}
