mod catalog_common;
mod catalog_engine;
mod catalog_labels;
