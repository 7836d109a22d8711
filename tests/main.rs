mod catalog_common;
mod catalog_engine;
