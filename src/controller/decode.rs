//! Watches that one bad object cannot stop.
//!
//! A typed watch decodes a whole list at once: one object the controller cannot read (a
//! field past the range of its type, written before the schema refused it, or by a newer
//! version of the CRD) fails the list, the watch never starts, and every other object of
//! that kind goes unreconciled. So each watch here reads the objects untyped and decodes
//! them one at a time: an object that does not decode is left out of the cache (as if it
//! were absent, so nothing acts on a stale copy of it), reported once per version with a
//! Warning event on the object and a log line, and counted in
//! `coreforge_undecodable_objects{kind}` for as long as it stays unreadable. A failed
//! watch is retried soon ([`WatchBackoff`]): after a 410 Gone it lists again within
//! seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::metrics::METRICS;

/// The objects that do not decode, reported once per version.
pub struct Undecodable {
    recorder: Recorder,
    /// (kind, namespace, name) → the resourceVersion reported last.
    objects: Mutex<HashMap<(String, String, String), String>>,
}

impl Undecodable {
    /// Reports with events recorded by `recorder`.
    pub fn new(recorder: Recorder) -> Self {
        Self { recorder, objects: Mutex::default() }
    }

    fn key(kind: &str, obj: &DynamicObject) -> (String, String, String) {
        (kind.to_string(), obj.namespace().unwrap_or_default(), obj.name_any())
    }

    /// Records that `obj` (of `kind`) does not decode, with `error`.
    fn report(&self, kind: &str, api_version: &str, obj: &DynamicObject, error: &serde_json::Error) {
        let version = obj.resource_version().unwrap_or_default();
        let first = {
            let Ok(mut objects) = self.objects.lock() else { return };
            let known = objects.insert(Self::key(kind, obj), version.clone());
            set_gauge(kind, &objects);
            known.as_deref() != Some(version.as_str())
        };
        if !first {
            return;
        }
        let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
        warn!(kind, namespace = %ns, name = %name, resource_version = %version, %error, "skipping an object the controller cannot read");
        let reference = ObjectReference {
            api_version: Some(api_version.to_string()),
            kind: Some(kind.to_string()),
            name: Some(name),
            namespace: obj.namespace(),
            uid: obj.uid(),
            resource_version: Some(version),
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "Undecodable".into(),
            note: Some(
                format!("coreforge cannot read this {kind} and skips it until it is fixed: {error}")
                    .chars()
                    .take(1000)
                    .collect(),
            ),
            action: "Decode".into(),
            secondary: None,
        };
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                warn!(error = %e, "could not record the Undecodable event");
            }
        });
    }

    /// Forgets `obj` (of `kind`): it decodes again, or it is gone.
    fn forget(&self, kind: &str, obj: &DynamicObject) {
        if let Ok(mut objects) = self.objects.lock()
            && objects.remove(&Self::key(kind, obj)).is_some()
        {
            set_gauge(kind, &objects);
        }
    }
}

fn set_gauge(kind: &str, objects: &HashMap<(String, String, String), String>) {
    let n = objects.keys().filter(|(k, _, _)| k == kind).count();
    METRICS.undecodable_objects.with_label_values(&[kind]).set(n as i64);
}

/// Decodes one object.
fn decode<K: DeserializeOwned>(obj: &DynamicObject) -> Result<K, serde_json::Error> {
    serde_json::from_value(serde_json::to_value(obj)?)
}

/// What the cache of `K` must take in for `event` of the untyped watch: the decoded
/// object; for an object that no longer decodes (or is deleted undecodable), the removal
/// of the copy `store` holds; nothing for one it never held.
fn convert<K>(
    event: watcher::Event<DynamicObject>,
    store: &Store<K>,
    undecodable: &Undecodable,
) -> Option<watcher::Event<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned,
{
    let kind = K::kind(&());
    let api_version = K::api_version(&());
    let held = |obj: &DynamicObject| {
        let reference = ObjectRef::<K>::new(&obj.name_any());
        let reference = match obj.namespace() {
            Some(ns) => reference.within(&ns),
            None => reference,
        };
        store.get(&reference).map(|k| (*k).clone())
    };
    // An applied object, during a relist (`initial`) or after it.
    let applied = |obj: DynamicObject, initial: bool| match decode(&obj) {
        Ok(k) => {
            undecodable.forget(&kind, &obj);
            Some(if initial { watcher::Event::InitApply(k) } else { watcher::Event::Apply(k) })
        }
        Err(e) => {
            undecodable.report(&kind, &api_version, &obj, &e);
            // Left out of a relist, the store drops it when the relist is done; after
            // one, its copy is removed.
            if initial { None } else { held(&obj).map(watcher::Event::Delete) }
        }
    };
    match event {
        watcher::Event::Init => Some(watcher::Event::Init),
        watcher::Event::InitDone => Some(watcher::Event::InitDone),
        watcher::Event::InitApply(obj) => applied(obj, true),
        watcher::Event::Apply(obj) => applied(obj, false),
        watcher::Event::Delete(obj) => {
            undecodable.forget(&kind, &obj);
            decode(&obj).ok().or_else(|| held(&obj)).map(watcher::Event::Delete)
        }
    }
}

/// How a failed watch is retried: after 0.5 s, doubling up to 5 s, back to 0.5 s once
/// it has run for 30 s without failing (kube's default grows to 30 s with jitter and
/// resets only after two quiet minutes). Six watches at most every 5 s is nothing to an
/// API server, and the client's rate limit bounds them anyway.
pub struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(5);

    /// The backoff every watch of the controller uses.
    pub fn new() -> ResetTimerBackoff<WatchBackoff> {
        ResetTimerBackoff::new(WatchBackoff { next: Self::MIN }, Duration::from_secs(30))
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (now * 2).min(Self::MAX);
        Some(now)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// The controllers' own backoff for their trigger streams: none, since every watch
/// backs off on its own ([`WatchBackoff`]). The runtime's default pauses *all* the
/// watches of a controller whenever any one of them fails, for a pause that grows to
/// 30 s: after an API server restart each watch met 410 Gone in turn, each error paused
/// the others longer, and a release created meanwhile was seen minutes later.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTriggerPause;

impl Iterator for NoTriggerPause {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl Backoff for NoTriggerPause {
    fn reset(&mut self) {}
}

/// A watch of `K` in `scope` (all namespaces when `None`) that decodes object by object
/// for the cache `store` reads, retried with [`WatchBackoff`].
pub fn watch<K>(
    client: &Client,
    scope: Option<&str>,
    config: watcher::Config,
    store: Store<K>,
    undecodable: Arc<Undecodable>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Send + Sync + 'static,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match scope {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    watcher(api, config).backoff(WatchBackoff::new()).filter_map(move |event| {
        let converted = match event {
            Ok(event) => convert(event, &store, &undecodable).map(Ok),
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(converted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_are_retried_within_seconds() {
        let mut b = WatchBackoff { next: WatchBackoff::MIN };
        let waits: Vec<u64> = (&mut b).take(6).map(|d| d.as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(WatchBackoff::MIN));
    }
    use crate::api::ImageRelease;
    use kube::runtime::events::Reporter;
    use kube::runtime::reflector;

    fn object(name: &str, rv: &str, support_ends_at: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "coreforge.dev/v1alpha1",
            "kind": "ImageRelease",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, "uid": format!("uid-{name}")},
            "spec": {"coreBuild": "cb", "version": "1.0.0", "supportEndsAt": support_ends_at},
        }))
        .unwrap()
    }

    fn undecodable() -> Undecodable {
        // Events go nowhere (nothing listens there); their tasks fail and log.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        Undecodable::new(Recorder::new(client, Reporter { controller: "test".into(), instance: None }))
    }

    fn gauge() -> i64 {
        METRICS.undecodable_objects.with_label_values(&["ImageRelease"]).get()
    }

    #[tokio::test]
    async fn an_undecodable_object_is_skipped_and_its_stale_copy_removed() {
        let (store, mut writer) = reflector::store::<ImageRelease>();
        let u = undecodable();
        let good = object("good", "1", "2030-01-01T00:00:00Z");
        let bad = object("bad", "2", "9999-12-31T23:59:59Z");

        // A relist with one bad object: the good one is taken in, the bad one left out.
        let mut events = vec![watcher::Event::Init, watcher::Event::InitApply(good.clone())];
        events.push(watcher::Event::InitApply(bad.clone()));
        events.push(watcher::Event::InitDone);
        for e in events {
            if let Some(e) = convert(e, &store, &u) {
                writer.apply_watcher_event(&e);
            }
        }
        assert_eq!(store.state().len(), 1);
        assert_eq!(store.state()[0].metadata.name.as_deref(), Some("good"));
        assert_eq!(gauge(), 1);

        // The good one is changed into an undecodable one: the cache forgets it rather
        // than act on its old copy.
        let spoiled = object("good", "3", "9999-12-31T23:59:59Z");
        let e = convert(watcher::Event::Apply(spoiled), &store, &u).expect("a removal of the stale copy");
        assert!(matches!(&e, watcher::Event::Delete(r) if r.metadata.name.as_deref() == Some("good")));
        writer.apply_watcher_event(&e);
        assert!(store.state().is_empty());
        assert_eq!(gauge(), 2);

        // Fixed: it decodes again and counts no more; the deleted bad one is forgotten.
        let fixed = object("good", "4", "2031-01-01T00:00:00Z");
        assert!(matches!(convert(watcher::Event::Apply(fixed), &store, &u), Some(watcher::Event::Apply(_))));
        assert!(convert(watcher::Event::Delete(bad), &store, &u).is_none());
        assert_eq!(gauge(), 0);
    }
}
