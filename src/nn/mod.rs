//! Layers, models and initialisation on top of a `Backend`.
