//! Named views into one flat buffer: every parameter (or running statistic) is a name, a shape and a
//! range. Names and layouts follow torchvision, so state dicts map one to one.

use std::ops::Range;

#[derive(Clone, Debug, PartialEq)]
pub struct TableEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub range: Range<usize>,
}

/// Entries in registration order (PyTorch's state-dict order); ranges are contiguous and ascending.
#[derive(Clone, Debug, Default)]
pub struct NamedTable {
    entries: Vec<TableEntry>,
}

impl NamedTable {
    /// Appends an entry and returns its index.
    pub fn push(&mut self, name: impl Into<String>, shape: &[usize]) -> usize {
        let start = self.len();
        let len: usize = shape.iter().product();
        self.entries.push(TableEntry {
            name: name.into(),
            shape: shape.to_vec(),
            range: start..start + len,
        });
        self.entries.len() - 1
    }
    pub fn len(&self) -> usize {
        self.entries.last().map_or(0, |e| e.range.end)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn entries(&self) -> &[TableEntry] {
        &self.entries
    }
    pub fn range(&self, index: usize) -> Range<usize> {
        self.entries[index].range.clone()
    }
    pub fn find(&self, name: &str) -> Option<&TableEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}
