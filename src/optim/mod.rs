//! Optimizers, learning-rate schedules and clipping on the flat parameter and gradient buffers.
