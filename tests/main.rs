mod catalog_common;
mod catalog_engine;
mod catalog_labels;
mod catalog_split;
mod catalog_update;
