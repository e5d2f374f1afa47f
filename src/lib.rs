//! coreforge: a Kubernetes controller that runs core builds as products.
//!
//! Where things live:
//! - [`api`]: the `CoreBuild` and `ImageRelease` types (the CRDs are generated from them);
//! - [`crdgen`]: renders `crds/*.yaml`;
//! - [`controller`]: the daemon; its pure decision core is [`controller::decide`];
//! - [`jobs`]: rendering of build and test Jobs, with the scripts in `src/scripts/`;
//! - [`privileges`]: what an administrator lets a CoreBuild's pods ask for;
//! - [`results`]: parsing what Jobs report; [`contract`]: judging it against the contract;
//! - [`snapshot`]: the frozen CoreBuild an attempt is made from; [`names`]: child names;
//! - [`browse`]: the service catalog as consumers browse it (HTML, JSON, the terminal);
//! - [`fence`]: the leader's right to write, which every write passes;
//! - [`health`]: what `/livez` and `/readyz` report, told by the daemon's parts;
//! - [`failpoint`]: named points where tests make the controller crash or hang;
//! - [`telemetry`]: logging set-up.

pub mod advisories;
pub mod api;
pub mod browse;
pub mod catalog;
pub mod contract;
pub mod controller;
pub mod crdgen;
pub mod failpoint;
pub mod fence;
pub mod health;
pub mod http;
pub mod jobs;
pub mod kubeclient;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod names;
pub mod privileges;
pub mod registry;
pub mod results;
pub mod signing;
pub mod snapshot;
pub mod telemetry;
