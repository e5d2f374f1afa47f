//! The snapshot of an attempt: the CoreBuild spec and the Containerfile, frozen in an
//! immutable ConfigMap owned by the release when the attempt starts. Jobs are rendered
//! from the snapshot, never from the live CoreBuild, so editing a CoreBuild never changes
//! what an in-flight or finished release means.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::api::{CoreBuildSpec, ImageRelease, Provenance};
use crate::names;
use crate::registry::{digest_of, repository_of};

/// Builder image used when a CoreBuild names none and the controller was given no
/// `--builder-image`: buildah's own image (it runs the default script as root).
pub const DEFAULT_BUILDER_IMAGE: &str = "quay.io/buildah/stable:v1.39";

/// The builder image of a CoreBuild spec, or `default` when it names none.
pub fn builder_image<'a>(spec: &'a CoreBuildSpec, default: &'a str) -> &'a str {
    spec.builder.as_ref().and_then(|b| b.image.as_deref()).unwrap_or(default)
}

/// The CoreBuild spec an attempt of `release` is made from: `cb`'s, with the release's own
/// `spec.base` (if it sets one) in place of `base`. That base must be an image of the
/// repository of the CoreBuild's base or of its tracked tag: a release may choose another
/// digest of the product's base, never another image.
pub fn release_base(cb: &CoreBuildSpec, release: &ImageRelease) -> Result<CoreBuildSpec, String> {
    let Some(base) = &release.spec.base else { return Ok(cb.clone()) };
    let mut allowed = vec![repository_of(&cb.base)];
    allowed.extend(cb.base_tracking.as_ref().map(|t| repository_of(&t.tag)));
    if !allowed.contains(&repository_of(base)) {
        return Err(format!(
            "spec.base {base} is not an image of {}: a release may replace its CoreBuild's base only by another digest of the same image (the repository of the CoreBuild's base or of its baseTracking.tag)",
            allowed.join(" or ")
        ));
    }
    let mut spec = cb.clone();
    spec.base = base.clone();
    Ok(spec)
}

/// ConfigMap key holding the CoreBuild spec (JSON).
pub const KEY_SPEC: &str = "corebuild.json";
/// ConfigMap key holding the Containerfile.
pub const KEY_CONTAINERFILE: &str = "Containerfile";
const ANNOTATION_GENERATION: &str = "coreforge.dev/corebuild-generation";
const ANNOTATION_ATTEMPT: &str = "coreforge.dev/attempt";
const ANNOTATION_BUILDER_IMAGE: &str = "coreforge.dev/builder-image";
const ANNOTATION_USER_NAMESPACE: &str = "coreforge.dev/builder-user-namespace";

/// What an attempt is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Name of the ConfigMap.
    pub name: String,
    /// Attempt it belongs to.
    pub attempt: i32,
    /// CoreBuild generation it was taken at.
    pub core_build_generation: i64,
    /// The CoreBuild spec.
    pub spec: CoreBuildSpec,
    /// The Containerfile.
    pub containerfile: String,
    /// The builder image: the CoreBuild's, else the controller's default when the
    /// attempt started.
    pub builder_image: String,
    /// Whether the build pod has a user namespace of its own (`hostUsers: false`), as
    /// the controller was configured when the attempt started.
    pub user_namespace: bool,
}

impl Snapshot {
    /// Provenance recorded in the release's status.
    pub fn provenance(&self) -> Provenance {
        let spec_json = serde_json::to_vec(&self.spec).unwrap_or_default();
        Provenance {
            core_build_generation: self.core_build_generation,
            core_build_spec_hash: names::sha256(&spec_json),
            base: self.spec.base.clone(),
            base_digest: digest_of(&self.spec.base).to_string(),
            blueprint_hash: names::sha256(self.containerfile.as_bytes()),
            builder_image: self.builder_image.clone(),
            snapshot: self.name.clone(),
        }
    }

    /// The immutable ConfigMap, owned by `release`.
    pub fn to_config_map(&self, release: &ImageRelease) -> ConfigMap {
        let spec = serde_json::to_string_pretty(&self.spec).unwrap_or_default();
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: release.namespace(),
                labels: Some(names::labels(release, None, self.attempt)),
                annotations: Some(BTreeMap::from([
                    (ANNOTATION_GENERATION.to_string(), self.core_build_generation.to_string()),
                    (ANNOTATION_ATTEMPT.to_string(), self.attempt.to_string()),
                    (ANNOTATION_BUILDER_IMAGE.to_string(), self.builder_image.clone()),
                    (ANNOTATION_USER_NAMESPACE.to_string(), self.user_namespace.to_string()),
                ])),
                owner_references: release.controller_owner_ref(&()).map(|o| vec![o]),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                (KEY_SPEC.to_string(), spec),
                (KEY_CONTAINERFILE.to_string(), self.containerfile.clone()),
            ])),
            immutable: Some(true),
            ..Default::default()
        }
    }

    /// Reads a snapshot back from its ConfigMap.
    pub fn from_config_map(cm: &ConfigMap) -> Result<Snapshot, String> {
        let name = cm.name_any();
        let data = cm.data.as_ref().ok_or_else(|| format!("snapshot ConfigMap {name} has no data"))?;
        let spec = data.get(KEY_SPEC).ok_or_else(|| format!("snapshot ConfigMap {name} has no {KEY_SPEC}"))?;
        let spec: CoreBuildSpec = serde_json::from_str(spec)
            .map_err(|e| format!("snapshot ConfigMap {name}: {KEY_SPEC} is not a CoreBuild spec: {e}"))?;
        let containerfile = data
            .get(KEY_CONTAINERFILE)
            .ok_or_else(|| format!("snapshot ConfigMap {name} has no {KEY_CONTAINERFILE}"))?;
        let number = |key: &str| -> Result<i64, String> {
            cm.annotations()
                .get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("snapshot ConfigMap {name} lacks a numeric {key} annotation"))
        };
        Ok(Snapshot {
            name: name.clone(),
            attempt: i32::try_from(number(ANNOTATION_ATTEMPT)?).map_err(|e| e.to_string())?,
            core_build_generation: number(ANNOTATION_GENERATION)?,
            // Snapshots taken before the builder image was recorded used the built-in default.
            builder_image: cm
                .annotations()
                .get(ANNOTATION_BUILDER_IMAGE)
                .cloned()
                .unwrap_or_else(|| builder_image(&spec, DEFAULT_BUILDER_IMAGE).to_string()),
            // Snapshots taken before it was recorded shared the node's users.
            user_namespace: cm.annotations().get(ANNOTATION_USER_NAMESPACE).is_some_and(|v| v == "true"),
            spec,
            containerfile: containerfile.clone(),
        })
    }
}
