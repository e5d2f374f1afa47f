//! coreforge: a Kubernetes controller that runs core builds as products.
//!
//! Where things live:
//! - [`api`]: the `CoreBuild` and `ImageRelease` types (the CRDs are generated from them).
//! - [`crdgen`]: renders `crds/*.yaml`.

pub mod api;
pub mod crdgen;
