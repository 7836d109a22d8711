pub mod metrics;
pub mod plot;
