//! tend: a pull-based GitOps agent for hosts without Kubernetes.
//!
//! One cycle: fetch the followed branch ([`source`]), load the host's layers from the commit's
//! tree ([`desired`]), observe what tend owns ([`docker`]), decide ([`plan`], pure), change
//! ([`apply`]) and record ([`state`]). [`daemon`] runs cycles on two clocks; [`cli`] renders.

pub mod api;
pub mod apply;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod desired;
pub mod docker;
pub mod events;
pub mod files;
pub mod hooks;
pub mod hostfiles;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod repack;
pub mod secretfs;
pub mod secrets;
pub mod source;
pub mod sources;
pub mod state;
pub mod systemd;
pub mod tls;
pub mod trust;
