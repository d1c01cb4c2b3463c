//! LDM DDPM schedule and DDIM sub-schedules.
