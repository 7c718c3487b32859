//! Diagrams of the transition table.
