//! The process-manager runtime (durable saga state, deadlines, compensation) and the
//! fulfilment saga that coordinates orders, inventory and payments. Not built yet.
