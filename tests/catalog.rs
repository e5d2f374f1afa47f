//! The service catalog end to end: real registries, real publishing and channel tags.
//! Build and test pods are simulated; the image they "built" is pushed to staging first.

mod fixtures;
mod support;

use std::time::Duration;

use anyhow::ensure;
use coreforge::api::{CoreBuild, ImageRelease, Phase};
use fixtures::{ControllerProcess, REGISTRY};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

const SETTLE: Duration = Duration::from_secs(120);

fn phase(r: &ImageRelease) -> Option<Phase> {
    r.status.as_ref().and_then(|s| s.phase)
}

async fn channel(ns: &str, tag: &str) -> anyhow::Result<Option<String>> {
    fixtures::registry_digest(REGISTRY, &format!("{ns}/core"), tag, None).await
}

async fn wait_channels(client: &Client, ns: &str, want: &[(&str, &str)]) -> anyhow::Result<CoreBuild> {
    let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), ns);
    let want: Vec<(String, String)> = want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    support::wait_for(&cbs, "debian", &format!("channels {want:?}"), SETTLE, |cb| {
        let got: Vec<(String, String)> =
            cb.status.iter().flat_map(|s| s.channels.iter().map(|c| (c.name.clone(), c.version.clone()))).collect();
        got == want
    })
    .await
}

#[tokio::test]
async fn releases_are_published_and_channels_follow_the_newest() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("publish", |client, ns| async move {
        let _controller = ControllerProcess::start(&ns).await?;
        let first = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        fixtures::create::<CoreBuild>(&client, &ns, fixtures::local_core_build("debian", &ns, &first)).await?;
        fixtures::create::<ImageRelease>(&client, &ns, fixtures::published_release("debian-12-7-0", "12.7.0")).await?;
        let r = fixtures::wait_release(&client, &ns, "debian-12-7-0", "Published", SETTLE, |r| phase(r) == Some(Phase::Published)).await?;
        let st = r.status.clone().unwrap();
        ensure!(st.digest.as_deref() == Some(first.as_str()));
        // The catalog serves exactly the recorded digest under the version tag…
        let repo = format!("{ns}/core");
        ensure!(fixtures::registry_digest(REGISTRY, &repo, "12.7.0", None).await? == Some(first.clone()));
        // …and every channel resolves to it.
        let cb = wait_channels(&client, &ns, &[("12", "12.7.0"), ("latest", "12.7.0")]).await?;
        ensure!(cb.status.unwrap().latest_version.as_deref() == Some("12.7.0"));
        for tag in ["12", "latest"] {
            ensure!(channel(&ns, tag).await? == Some(first.clone()), "channel {tag}");
        }
        ensure!(st.published_at.is_some() && fixtures::release_condition(&r, "Ready").unwrap().0 == "True");
        // The release lists every reference it can be pulled by, once the channels point at it.
        let r = fixtures::wait_release(&client, &ns, "debian-12-7-0", "the channel references", SETTLE, |r| {
            r.status.as_ref().is_some_and(|s| s.published.len() == 3)
        })
        .await?;
        let refs = r.status.unwrap().published;
        ensure!(refs == [format!("{REGISTRY}/{repo}:12.7.0"), format!("{REGISTRY}/{repo}:12"), format!("{REGISTRY}/{repo}:latest")], "{refs:?}");

        // A newer patch release moves the channels; the older version tag stays.
        let second = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"spec": {"builder": {"podAnnotations": {"sim.coreforge.dev/termination-message": fixtures::build_result(&second)}}}});
        cbs.patch("debian", &PatchParams::default(), &Patch::Merge(patch)).await?;
        fixtures::create::<ImageRelease>(&client, &ns, fixtures::published_release("debian-12-7-1", "12.7.1")).await?;
        fixtures::wait_release(&client, &ns, "debian-12-7-1", "Published", SETTLE, |r| phase(r) == Some(Phase::Published)).await?;
        wait_channels(&client, &ns, &[("12", "12.7.1"), ("latest", "12.7.1")]).await?;
        for tag in ["12", "latest", "12.7.1"] {
            ensure!(channel(&ns, tag).await? == Some(second.clone()), "tag {tag}");
        }
        ensure!(channel(&ns, "12.7.0").await? == Some(first.clone()), "the older version tag stays");
        // The first release no longer claims the channels.
        fixtures::wait_release(&client, &ns, "debian-12-7-0", "only its version tag", SETTLE, |r| {
            r.status.as_ref().is_some_and(|s| s.published == [format!("{REGISTRY}/{repo}:12.7.0")])
        })
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_untested_digest_never_reaches_the_catalog() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("untested", |client, ns| async move {
        let _controller = ControllerProcess::start(&ns).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        let mut cb = fixtures::local_core_build("debian", &ns, &digest);
        cb["spec"]["tester"]["podAnnotations"]["sim.coreforge.dev/termination-message"] =
            json!(fixtures::test_report(false));
        fixtures::create::<CoreBuild>(&client, &ns, cb).await?;
        fixtures::create::<ImageRelease>(&client, &ns, fixtures::published_release("r", "12.7.0")).await?;
        let r =
            fixtures::wait_release(&client, &ns, "r", "Failed", SETTLE, |r| phase(r) == Some(Phase::Failed)).await?;
        ensure!(fixtures::release_condition(&r, "Tested").unwrap().1 == "ContractBroken");
        let repo = format!("{ns}/core");
        ensure!(
            fixtures::registry_digest(REGISTRY, &repo, &digest, None).await?.is_none(),
            "the digest is not in the catalog"
        );
        ensure!(fixtures::registry_digest(REGISTRY, &repo, "12.7.0", None).await?.is_none(), "no version tag");
        ensure!(
            fixtures::registry_digest(REGISTRY, &format!("{ns}/staging"), &digest, None).await?.is_some(),
            "staging keeps it"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_build_whose_digest_is_not_in_staging_fails() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("not-in-staging", |client, ns| async move {
        let _controller = ControllerProcess::start(&ns).await?;
        // The simulated build claims a digest nobody pushed.
        fixtures::create::<CoreBuild>(&client, &ns, fixtures::local_core_build("debian", &ns, fixtures::DIGEST2))
            .await?;
        fixtures::create::<ImageRelease>(&client, &ns, fixtures::published_release("r", "12.7.0")).await?;
        let r =
            fixtures::wait_release(&client, &ns, "r", "Failed", SETTLE, |r| phase(r) == Some(Phase::Failed)).await?;
        let (_, reason, message) = fixtures::release_condition(&r, "Ready").unwrap();
        ensure!(reason == "DigestNotInStaging" && message.contains(fixtures::DIGEST2), "{reason}: {message}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn publishing_waits_for_a_stopped_registry_and_completes_when_it_is_back() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("registry-down", |client, ns| async move {
        let mut registry = fixtures::RegistryProcess::start(&ns).await?;
        let _controller = ControllerProcess::start(&ns).await?;
        let staging = format!("{}/{ns}/staging", registry.addr);
        let digest = fixtures::seed_image(&staging).await?;
        let mut cb = fixtures::local_core_build("debian", &ns, &digest);
        cb["spec"]["catalog"]["repository"] = json!(format!("{}/{ns}/core", registry.addr));
        cb["spec"]["catalog"]["stagingRepository"] = json!(staging);
        fixtures::create::<CoreBuild>(&client, &ns, cb).await?;
        // Verified first, then the registry goes away, then GitOps asks for publication.
        fixtures::create::<ImageRelease>(&client, &ns, fixtures::release("r", "debian", "12.7.0")).await?;
        fixtures::wait_release(&client, &ns, "r", "Verified", SETTLE, |r| phase(r) == Some(Phase::Verified)).await?;
        registry.stop().await?;
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        irs.patch("r", &PatchParams::default(), &Patch::Merge(json!({"spec": {"target": "Published"}}))).await?;
        let r = fixtures::wait_release(&client, &ns, "r", "a RegistryUnavailable condition", SETTLE, |r| {
            fixtures::release_condition(r, "Published").is_some_and(|c| c.1 == "RegistryUnavailable")
        })
        .await?;
        let (_, _, message) = fixtures::release_condition(&r, "Ready").unwrap();
        ensure!(message.contains(&format!("registry {} is unreachable", registry.addr)), "{message}");
        ensure!(
            fixtures::release_condition(&r, "Reconciling").unwrap().0 == "True"
                && fixtures::release_condition(&r, "Stalled").unwrap().0 == "False"
        );
        ensure!(phase(&r) == Some(Phase::Verified));
        registry.resume().await?;
        let r = fixtures::wait_release(&client, &ns, "r", "Published after the registry came back", SETTLE, |r| {
            phase(r) == Some(Phase::Published)
        })
        .await?;
        ensure!(fixtures::release_condition(&r, "Published").unwrap().0 == "True");
        ensure!(
            fixtures::registry_digest(&registry.addr, &format!("{ns}/core"), "12.7.0", None).await? == Some(digest)
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn wrong_credentials_block_publishing_with_a_clear_condition() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("bad-creds", |client, ns| async move {
        let _controller = ControllerProcess::start(&ns).await?;
        let (user, password) = fixtures::registry_credentials()?;
        // Staging is the open registry, the catalog requires credentials: publishing
        // copies the image across registries.
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        let mut cb = fixtures::local_core_build("debian", &ns, &digest);
        let repo = format!("{ns}/core");
        cb["spec"]["catalog"]["repository"] = json!(format!("{}/{repo}", fixtures::AUTH_REGISTRY));
        cb["spec"]["catalog"]["credentialsSecret"] = json!({"name": "push"});
        fixtures::create::<Secret>(
            &client,
            &ns,
            fixtures::docker_config_secret("push", fixtures::AUTH_REGISTRY, &user, "wrong"),
        )
        .await?;
        fixtures::create::<CoreBuild>(&client, &ns, cb).await?;
        fixtures::create::<ImageRelease>(&client, &ns, fixtures::published_release("r", "12.7.0")).await?;
        let r = fixtures::wait_release(&client, &ns, "r", "a RegistryUnauthorized condition", SETTLE, |r| {
            fixtures::release_condition(r, "Published").is_some_and(|c| c.1 == "RegistryUnauthorized")
        })
        .await?;
        ensure!(phase(&r) == Some(Phase::Verified), "not published");
        ensure!(fixtures::release_condition(&r, "Stalled").unwrap().0 == "True", "a person has to fix the credentials");
        let (_, _, message) = fixtures::release_condition(&r, "Ready").unwrap();
        ensure!(
            message.contains(&format!("registry {} refused the credentials", fixtures::AUTH_REGISTRY)),
            "{message}"
        );
        // What the catalog serves under the version tag, asked with the right credentials.
        let catalog_version =
            || fixtures::registry_digest(fixtures::AUTH_REGISTRY, &repo, "12.7.0", Some((&user, &password)));
        ensure!(catalog_version().await?.is_none());
        // Fixing the Secret is enough: the controller keeps trying with a backoff.
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let fixed = fixtures::docker_config_secret("push", fixtures::AUTH_REGISTRY, &user, &password);
        secrets.patch("push", &PatchParams::default(), &Patch::Merge(json!({"data": fixed["data"]}))).await?;
        fixtures::wait_release(&client, &ns, "r", "Published with the fixed credentials", SETTLE, |r| {
            phase(r) == Some(Phase::Published)
        })
        .await?;
        ensure!(catalog_version().await? == Some(digest));
        Ok(())
    })
    .await
}
