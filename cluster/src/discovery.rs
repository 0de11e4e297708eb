//! Service discovery over the NATS service API (to be written).
