//! Small building blocks shared by the networks.
