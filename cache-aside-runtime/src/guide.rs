//! The manual: one page per topic, written in `docs/` at the repository root.
