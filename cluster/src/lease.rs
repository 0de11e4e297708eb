//! The lease of a singleton worker in a JetStream key-value bucket (to be written).
