//! What a cluster administrator lets build and test pods do (pure).
//!
//! Whoever may create a CoreBuild chooses its pods' image, ServiceAccount and security
//! contexts, but must not thereby gain powers the administrator did not grant: the
//! controller creates pods with its own ServiceAccount, so without this check a CoreBuild
//! author could make it create a privileged pod, run any image as the builder (which gets
//! the builder's capabilities and the registry credentials) or run a pod as any
//! ServiceAccount of the namespace. The default builder and its own privileges (see
//! [`crate::jobs`]) are always allowed; anything beyond them needs a controller flag, set
//! by whoever installs the controller (`--allow-builder-image`,
//! `--allow-builder-service-account`, `--allow-builder-capability`,
//! `--allow-privileged-builders`).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::SecurityContext;

use crate::api::CoreBuildSpec;
use crate::jobs;

/// The administrator's policy for the pods the controller creates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privileges {
    /// Linux capabilities (without `CAP_`, upper case) a CoreBuild's builder or tester may
    /// add beyond those of the default builder.
    pub capabilities: BTreeSet<String>,
    /// Whether a CoreBuild's builder or tester may run privileged.
    pub privileged: bool,
    /// Builder images a CoreBuild may name besides the default builder: a repository
    /// (`registry.example/builders/buildah`, any tag or digest of it) or a prefix ending in
    /// `/` (`registry.example/builders/`, every repository under it).
    pub builder_images: BTreeSet<String>,
    /// ServiceAccounts a CoreBuild's builder or tester may run as (by name, in the
    /// CoreBuild's namespace).
    pub service_accounts: BTreeSet<String>,
}

impl Privileges {
    /// A policy allowing `capabilities` (any spelling: `sys_admin`, `CAP_SYS_ADMIN`) and,
    /// if `privileged`, privileged containers.
    pub fn new(capabilities: impl IntoIterator<Item = impl AsRef<str>>, privileged: bool) -> Self {
        Self {
            capabilities: capabilities.into_iter().map(|c| normalize(c.as_ref())).collect(),
            privileged,
            ..Default::default()
        }
    }

    /// The same policy, also allowing the builder images (repositories, or prefixes
    /// ending in `/`) in `images`.
    pub fn with_builder_images(mut self, images: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        self.builder_images.extend(images.into_iter().map(|i| i.as_ref().trim().to_string()).filter(|i| !i.is_empty()));
        self
    }

    /// The same policy, also allowing the ServiceAccounts in `names`.
    pub fn with_service_accounts(mut self, names: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        self.service_accounts
            .extend(names.into_iter().map(|n| n.as_ref().trim().to_string()).filter(|n| !n.is_empty()));
        self
    }

    /// Whether `image` is an allowed builder image besides the default.
    fn allows_image(&self, image: &str) -> bool {
        self.builder_images.iter().any(|allowed| match image.strip_prefix(allowed.as_str()) {
            None => false,
            Some(rest) => allowed.ends_with('/') || rest.is_empty() || rest.starts_with([':', '@']),
        })
    }
}

/// A capability name as the policy compares it: upper case, without `CAP_`.
fn normalize(cap: &str) -> String {
    let upper = cap.trim().to_ascii_uppercase();
    upper.strip_prefix("CAP_").map(str::to_string).unwrap_or(upper)
}

/// Why the pods `spec` asks for exceed what `policy` allows (`None`: they do not). The
/// message names the field and the flag that would allow it. The default builder
/// (`default_builder_image`) is always allowed. Either pod may have the default build
/// pod's capabilities; a user-namespaced build pod's (`user_namespaced_builder`) only the
/// build pod, the one pod that runs in its own user namespace.
pub fn refusal(
    spec: &CoreBuildSpec,
    policy: &Privileges,
    user_namespaced_builder: bool,
    default_builder_image: &str,
) -> Option<String> {
    let builder = spec.builder.as_ref().and_then(|b| b.pod.security_context.as_ref());
    let tester = spec.tester.as_ref().and_then(|t| t.security_context.as_ref());
    let mut problems = Vec::new();
    if let Some(image) = spec.builder.as_ref().and_then(|b| b.image.as_deref())
        && image != default_builder_image
        && !policy.allows_image(image)
    {
        problems.push(format!(
            "spec.builder.image {image} is not the default builder, and this controller allows no other image there (--allow-builder-image)"
        ));
    }
    for (field, pod) in [
        ("spec.builder.serviceAccountName", spec.builder.as_ref().map(|b| &b.pod)),
        ("spec.tester.serviceAccountName", spec.tester.as_ref()),
    ] {
        if let Some(account) = pod.and_then(|p| p.service_account_name.as_deref())
            && !policy.service_accounts.contains(account)
        {
            problems.push(format!(
                "{field} is {account}, and this controller runs build and test pods as no ServiceAccount but the namespace's default unless allowed (--allow-builder-service-account)"
            ));
        }
    }
    for (field, context, defaults) in [
        ("spec.builder.securityContext", builder, jobs::builder_capabilities(user_namespaced_builder)),
        ("spec.tester.securityContext", tester, jobs::BUILDER_CAPABILITIES),
    ] {
        let Some(context) = context else { continue };
        problems.extend(context_problems(field, context, policy, defaults));
    }
    (!problems.is_empty()).then(|| {
        format!(
            "{}; only the administrator who runs the controller can allow more (see the README, \"Builder privileges\")",
            problems.join("; ")
        )
    })
}

fn context_problems(
    field: &str,
    context: &SecurityContext,
    policy: &Privileges,
    builder_capabilities: &[&str],
) -> Vec<String> {
    let mut problems = Vec::new();
    if context.privileged == Some(true) && !policy.privileged {
        problems.push(format!(
            "{field}.privileged is true, and this controller does not allow privileged pods (--allow-privileged-builders)"
        ));
    }
    let added = context.capabilities.as_ref().and_then(|c| c.add.as_ref());
    let beyond: BTreeSet<String> = added
        .into_iter()
        .flatten()
        .map(|c| normalize(c))
        .filter(|c| !builder_capabilities.contains(&c.as_str()) && !policy.capabilities.contains(c))
        .collect();
    if !beyond.is_empty() {
        let list = beyond.into_iter().collect::<Vec<_>>().join(", ");
        problems.push(format!(
            "{field}.capabilities.add asks for {list}, which this controller does not allow (--allow-builder-capability)"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Capabilities;
    use serde_json::json;

    use super::*;

    fn spec(builder: serde_json::Value, tester: serde_json::Value) -> CoreBuildSpec {
        serde_json::from_value(json!({
            "base": format!("example.org/base@sha256:{}", "a".repeat(64)),
            "blueprint": {"containerfile": "FROM scratch\n"},
            "contract": {"user": "root"},
            "catalog": {"repository": "example.org/core", "stagingRepository": "example.org/staging"},
            "builder": builder,
            "tester": tester,
        }))
        .unwrap()
    }

    const DEFAULT_CAPS: bool = false;
    const DEFAULT_IMAGE: &str = "registry.local/builder@sha256:1";

    #[test]
    fn only_the_default_builder_or_an_allowed_one_may_be_named() {
        let named = |image: &str| spec(json!({"image": image}), json!({}));
        let none = Privileges::default();
        assert_eq!(refusal(&named(DEFAULT_IMAGE), &none, DEFAULT_CAPS, DEFAULT_IMAGE), None);
        let msg = refusal(&named("evil.example/miner:1"), &none, DEFAULT_CAPS, DEFAULT_IMAGE).unwrap();
        assert!(msg.contains("spec.builder.image evil.example/miner:1 is not the default builder"), "{msg}");
        assert!(msg.contains("--allow-builder-image"), "{msg}");
        let policy = Privileges::default().with_builder_images(["reg.example/builders/", "reg.example/kaniko"]);
        for ok in ["reg.example/builders/buildah:1", "reg.example/kaniko@sha256:2", "reg.example/kaniko"] {
            assert_eq!(refusal(&named(ok), &policy, DEFAULT_CAPS, DEFAULT_IMAGE), None, "{ok}");
        }
        for refused in ["reg.example/kaniko-evil:1", "reg.example/buildersx/a", "evil.example/reg.example/kaniko"] {
            assert!(refusal(&named(refused), &policy, DEFAULT_CAPS, DEFAULT_IMAGE).is_some(), "{refused}");
        }
    }

    #[test]
    fn service_accounts_need_the_administrators_leave() {
        let s = spec(json!({"serviceAccountName": "deployer"}), json!({"serviceAccountName": "reader"}));
        let msg = refusal(&s, &Privileges::default(), DEFAULT_CAPS, DEFAULT_IMAGE).unwrap();
        assert!(msg.contains("spec.builder.serviceAccountName is deployer"), "{msg}");
        assert!(msg.contains("spec.tester.serviceAccountName is reader"), "{msg}");
        assert!(msg.contains("--allow-builder-service-account"), "{msg}");
        let policy = Privileges::default().with_service_accounts(["deployer"]);
        let msg = refusal(&s, &policy, DEFAULT_CAPS, DEFAULT_IMAGE).unwrap();
        assert!(!msg.contains("deployer") && msg.contains("reader"), "{msg}");
        let both = policy.with_service_accounts(["reader"]);
        assert_eq!(refusal(&s, &both, DEFAULT_CAPS, DEFAULT_IMAGE), None);
    }

    #[test]
    fn no_security_context_and_the_default_builders_capabilities_are_always_allowed() {
        let none = Privileges::default();
        assert_eq!(refusal(&spec(json!({}), json!({})), &none, DEFAULT_CAPS, DEFAULT_IMAGE), None);
        let same = spec(json!({"securityContext": {"capabilities": {"add": ["CAP_SETUID", "setgid"]}}}), json!({}));
        assert_eq!(refusal(&same, &none, DEFAULT_CAPS, DEFAULT_IMAGE), None);
        let dropping = spec(json!({"securityContext": {"privileged": false, "runAsUser": 0}}), json!({}));
        assert_eq!(refusal(&dropping, &none, DEFAULT_CAPS, DEFAULT_IMAGE), None);
    }

    #[test]
    fn privileged_is_refused_unless_the_administrator_allows_it() {
        let s = spec(json!({"securityContext": {"privileged": true}}), json!({}));
        let msg = refusal(&s, &Privileges::default(), DEFAULT_CAPS, DEFAULT_IMAGE).unwrap();
        assert!(msg.contains("spec.builder.securityContext.privileged is true"), "{msg}");
        assert!(msg.contains("--allow-privileged-builders"), "{msg}");
        assert_eq!(refusal(&s, &Privileges::new(None::<&str>, true), DEFAULT_CAPS, DEFAULT_IMAGE), None);
    }

    #[test]
    fn capabilities_beyond_the_default_builders_are_named_and_refused() {
        let s = spec(
            json!({}),
            json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN", "SETUID"]}}}),
        );
        let msg = refusal(&s, &Privileges::default(), DEFAULT_CAPS, DEFAULT_IMAGE).unwrap();
        assert!(msg.contains("spec.tester.securityContext.capabilities.add asks for NET_ADMIN, SYS_ADMIN"), "{msg}");
        assert!(msg.contains("--allow-builder-capability"), "{msg}");
        let allowed = Privileges::new(["cap_sys_admin", "NET_ADMIN"], false);
        assert_eq!(refusal(&s, &allowed, DEFAULT_CAPS, DEFAULT_IMAGE), None);
        let partly = Privileges::new(["SYS_ADMIN"], false);
        let msg = refusal(&s, &partly, DEFAULT_CAPS, DEFAULT_IMAGE).unwrap();
        assert!(msg.contains("asks for NET_ADMIN,") && !msg.contains("SYS_ADMIN"), "{msg}");
    }

    #[test]
    fn both_pods_are_checked_and_every_problem_is_named() {
        let s = spec(
            json!({"securityContext": {"privileged": true}}),
            json!({"securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}}}),
        );
        let msg = refusal(&s, &Privileges::default(), DEFAULT_CAPS, DEFAULT_IMAGE).unwrap();
        assert!(msg.contains("spec.builder.securityContext.privileged"), "{msg}");
        assert!(msg.contains("spec.tester.securityContext.capabilities.add asks for SYS_PTRACE"), "{msg}");
    }

    #[test]
    fn capability_names_are_compared_in_one_spelling() {
        assert_eq!(normalize(" cap_sys_admin"), "SYS_ADMIN");
        assert_eq!(normalize("SETUID"), "SETUID");
        let context = SecurityContext {
            capabilities: Some(Capabilities { add: Some(vec!["Cap_Net_Raw".into()]), drop: None }),
            ..Default::default()
        };
        assert!(context_problems("f", &context, &Privileges::new(["NET_RAW"], false), &[]).is_empty());
    }

    #[test]
    fn a_user_namespaced_build_pod_may_have_its_capabilities_and_the_test_pod_may_not() {
        let sys_admin = json!({"securityContext": {"capabilities": {"add": ["SYS_ADMIN", "CHOWN"]}}});
        let builder = spec(sys_admin.clone(), json!({}));
        assert_eq!(refusal(&builder, &Privileges::default(), true, DEFAULT_IMAGE), None);
        assert!(
            refusal(&builder, &Privileges::default(), false, DEFAULT_IMAGE)
                .unwrap()
                .contains("asks for CHOWN, SYS_ADMIN")
        );
        let tester = spec(json!({}), sys_admin);
        let msg = refusal(&tester, &Privileges::default(), true, DEFAULT_IMAGE).unwrap();
        assert!(msg.starts_with("spec.tester.securityContext.capabilities.add asks for CHOWN, SYS_ADMIN"), "{msg}");
    }
}
