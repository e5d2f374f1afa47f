//! What the controller knows without asking the API server: the reflector stores of the
//! objects its reconcilers read, trimmed to the fields they use, with indexes by the keys
//! they look up; and the expectations that keep a reconciler from deciding on a cached
//! object older than the one it wrote itself.
//!
//! Every reconcile reads from here. The API server is asked only for what is not cached:
//! a blueprint ConfigMap when an attempt starts, and a credentials Secret (see
//! [`crate::catalog::Registries`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::ObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

use crate::api::{CoreBuild, ImageRelease};

/// The annotation `kubectl apply` keeps a whole copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The label the Job controller puts on its pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// Drops what no reconciler reads from any object: managed fields and the copy of the
/// object `kubectl apply` keeps in an annotation (together often larger than the rest).
pub fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// A Job as the controller reads it: its identity, owner and status. The pod template
/// (with the step's script) is never read back.
pub fn trim_job(job: &mut Job) {
    trim_meta(&mut job.metadata);
    job.spec = None;
}

/// A pod as the controller reads it: names, labels and the container states and
/// conditions of its status.
pub fn trim_pod(pod: &mut Pod) {
    trim_meta(&mut pod.metadata);
    pod.metadata.annotations = None;
    pod.spec = None;
    if let Some(st) = pod.status.as_mut() {
        st.init_container_statuses = None;
        st.ephemeral_container_statuses = None;
        st.host_ips = None;
        st.pod_ips = None;
        st.resource_claim_statuses = None;
    }
}

/// A secondary index over a reflector store: the names of the objects of a namespace
/// that share a key (the CoreBuild of a release, the Job of a pod). Kept by
/// [`Index::apply`] from the same watch events as the store, so a lookup costs the
/// size of its answer, not of the store.
pub struct Index<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    key: fn(&K) -> Option<String>,
    state: RwLock<IndexState>,
}

#[derive(Default)]
struct IndexState {
    current: Keys,
    /// What a relist has delivered so far; replaces `current` when it is done, as the
    /// store's contents are.
    relist: Option<Keys>,
}

#[derive(Default)]
struct Keys {
    /// (namespace, key) → names.
    names: HashMap<(String, String), BTreeSet<String>>,
    /// (namespace, name) → key.
    keys: HashMap<(String, String), String>,
}

impl Keys {
    fn set(&mut self, ns: String, name: String, key: Option<String>) {
        let id = (ns.clone(), name.clone());
        if let Some(old) = self.keys.remove(&id) {
            let old = (ns.clone(), old);
            if let Some(set) = self.names.get_mut(&old) {
                set.remove(&name);
                if set.is_empty() {
                    self.names.remove(&old);
                }
            }
        }
        if let Some(key) = key {
            self.names.entry((ns, key.clone())).or_default().insert(name);
            self.keys.insert(id, key);
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Index<K> {
    /// An index of `store` by `key`.
    pub fn new(store: Store<K>, key: fn(&K) -> Option<String>) -> Arc<Self> {
        Arc::new(Self { store, key, state: RwLock::default() })
    }

    /// The store it indexes.
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Follows one watch event (call it for every event the store's writer gets).
    pub fn apply(&self, event: &watcher::Event<K>) {
        let Ok(mut st) = self.state.write() else { return };
        let st = &mut *st;
        let id = |obj: &K| (obj.namespace().unwrap_or_default(), obj.name_any());
        match event {
            watcher::Event::Apply(obj) => {
                let (ns, name) = id(obj);
                st.current.set(ns, name, (self.key)(obj));
            }
            watcher::Event::Delete(obj) => {
                let (ns, name) = id(obj);
                st.current.set(ns, name, None);
            }
            watcher::Event::Init => st.relist = Some(Keys::default()),
            watcher::Event::InitApply(obj) => {
                let (ns, name) = id(obj);
                st.relist.get_or_insert_with(Keys::default).set(ns, name, (self.key)(obj));
            }
            watcher::Event::InitDone => {
                if let Some(keys) = st.relist.take() {
                    st.current = keys;
                }
            }
        }
    }

    /// The cached objects of namespace `ns` with key `key`.
    pub fn get(&self, ns: &str, key: &str) -> Vec<Arc<K>> {
        let names: Vec<String> = match self.state.read() {
            Ok(st) => st.current.names.get(&(ns.to_string(), key.to_string())).map(|s| s.iter().cloned().collect()),
            Err(_) => None,
        }
        .unwrap_or_default();
        names.iter().filter_map(|name| self.store.get(&ObjectRef::new(name).within(ns))).collect()
    }
}

/// The caches of one scope (a namespace, or the cluster).
#[derive(Clone)]
pub struct Caches {
    /// ImageReleases, by CoreBuild.
    pub releases: Arc<Index<ImageRelease>>,
    /// CoreBuilds.
    pub core_builds: Store<CoreBuild>,
    /// The Jobs of releases (by name: names derive from the attempt).
    pub jobs: Store<Job>,
    /// The pods of those Jobs, by Job.
    pub pods: Arc<Index<Pod>>,
    /// Attempt snapshots (ConfigMaps labelled with their release), by name.
    pub snapshots: Store<ConfigMap>,
    /// `FailedCreate` events of Jobs, by Job: why a Job has no pod.
    pub failed_creates: Arc<Index<Event>>,
    /// One bit per [`Cache`] that has listed its objects once.
    listed: Arc<watch::Sender<u8>>,
}

/// The caches of a scope, for [`Caches::follow`].
#[derive(Clone, Copy)]
pub enum Cache {
    Releases,
    CoreBuilds,
    Jobs,
    Pods,
    Snapshots,
    FailedCreates,
}

const ALL_LISTED: u8 = (1 << (Cache::FailedCreates as u8 + 1)) - 1;

impl Caches {
    /// The caches of a scope, empty, over these stores.
    pub fn new(
        releases: Arc<Index<ImageRelease>>,
        core_builds: Store<CoreBuild>,
        jobs: Store<Job>,
        pods: Arc<Index<Pod>>,
        snapshots: Store<ConfigMap>,
        failed_creates: Arc<Index<Event>>,
    ) -> Self {
        let listed = Arc::new(watch::Sender::new(0));
        Self { releases, core_builds, jobs, pods, snapshots, failed_creates, listed }
    }

    /// Follows a watch event of cache `which` (call it for every event its store gets):
    /// the end of its first list makes it ready.
    pub fn follow<K>(&self, which: Cache, event: &watcher::Event<K>) {
        if matches!(event, watcher::Event::InitDone) {
            self.listed.send_modify(|l| *l |= 1 << which as u8);
        }
    }

    /// Whether every cache has listed its objects once: before that, an absent object
    /// may only not be listed yet.
    pub fn is_ready(&self) -> bool {
        *self.listed.borrow() == ALL_LISTED
    }

    /// Resolves once [`Caches::is_ready`]. (The stores' own readiness admits one waiter
    /// at a time, and the controller runtime is one already: a second would take its
    /// wake-up.)
    pub async fn ready(&self) {
        // The sender lives as long as `self`: this ends only when all are listed.
        let _ = self.listed.subscribe().wait_for(|l| *l == ALL_LISTED).await;
    }

    /// The releases of CoreBuild `core_build` in `ns`.
    pub fn releases_of(&self, ns: &str, core_build: &str) -> Vec<Arc<ImageRelease>> {
        self.releases.get(ns, core_build)
    }

    /// A CoreBuild.
    pub fn core_build(&self, ns: &str, name: &str) -> Option<Arc<CoreBuild>> {
        self.core_builds.get(&ObjectRef::new(name).within(ns))
    }

    /// A Job.
    pub fn job(&self, ns: &str, name: &str) -> Option<Arc<Job>> {
        self.jobs.get(&ObjectRef::new(name).within(ns))
    }

    /// The pods of Job `job`.
    pub fn pods_of(&self, ns: &str, job: &str) -> Vec<Pod> {
        self.pods.get(ns, job).iter().map(|p| (**p).clone()).collect()
    }

    /// The `FailedCreate` events of the Job with uid `uid` named `job`.
    pub fn failed_creates_of(&self, ns: &str, job: &str, uid: &str) -> Vec<Event> {
        self.failed_creates
            .get(ns, job)
            .iter()
            .filter(|e| e.involved_object.uid.as_deref() == Some(uid))
            .map(|e| (**e).clone())
            .collect()
    }

    /// An attempt's snapshot ConfigMap.
    pub fn snapshot(&self, ns: &str, name: &str) -> Option<Arc<ConfigMap>> {
        self.snapshots.get(&ObjectRef::new(name).within(ns))
    }
}

/// How long a reconciler waits for the cache to show its own last write before it
/// decides on what the cache holds anyway (the write's precondition still guards it).
pub const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The status each object had after this controller's last write to it, until the
/// cache shows it (the ReplicaSet controller's "expectations"). A reconcile can be
/// triggered by another object's event before the watch delivers the object's own last
/// write; deciding then would act on an old phase (publish again, create again). So a
/// reconciler asks [`Expectations::met`] first, and waits for the watch when it says no.
pub struct Expectations<S> {
    written: Mutex<HashMap<(String, String), Written<S>>>,
}

struct Written<S> {
    resource_version: Option<String>,
    status: Option<S>,
    at: Instant,
}

impl<S: PartialEq> Default for Expectations<S> {
    fn default() -> Self {
        Self { written: Mutex::default() }
    }
}

impl<S: PartialEq> Expectations<S> {
    /// Records what a write left the object as (from the API server's answer).
    pub fn wrote(&self, ns: &str, name: &str, resource_version: Option<String>, status: Option<S>) {
        if let Ok(mut w) = self.written.lock() {
            w.insert((ns.into(), name.into()), Written { resource_version, status, at: Instant::now() });
        }
    }

    /// Whether the cached object (`resource_version`, `status`) shows the last write:
    /// it is that version, or a later one with the same status (someone changed its
    /// spec or labels since). Also yes when nothing was written, or the wait timed out.
    pub fn met(&self, ns: &str, name: &str, resource_version: Option<&str>, status: Option<&S>) -> bool {
        let Ok(mut w) = self.written.lock() else { return true };
        let key = (ns.to_string(), name.to_string());
        let Some(e) = w.get(&key) else { return true };
        let met = e.resource_version.as_deref() == resource_version
            || e.status.as_ref() == status
            || e.at.elapsed() >= EXPECTATION_TIMEOUT;
        if met {
            w.remove(&key);
        }
        met
    }

    /// Forgets an object (deleted).
    pub fn forget(&self, ns: &str, name: &str) {
        if let Ok(mut w) = self.written.lock() {
            w.remove(&(ns.to_string(), name.to_string()));
        }
    }

    /// How many objects are awaited.
    pub fn len(&self) -> usize {
        self.written.lock().map(|w| w.len()).unwrap_or_default()
    }

    /// Whether none is awaited.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;

    fn pod(name: &str, job: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.labels = Some([(JOB_NAME_LABEL.to_string(), job.to_string())].into());
        p
    }

    fn job_of(p: &Pod) -> Option<String> {
        p.labels().get(JOB_NAME_LABEL).cloned()
    }

    #[test]
    fn the_index_follows_the_store_through_changes_deletes_and_relists() {
        let (store, mut writer) = reflector::store::<Pod>();
        let index = Index::new(store, job_of);
        let mut feed = |e: watcher::Event<Pod>| {
            index.apply(&e);
            writer.apply_watcher_event(&e);
        };
        feed(watcher::Event::Apply(pod("a", "j1")));
        feed(watcher::Event::Apply(pod("b", "j1")));
        feed(watcher::Event::Apply(pod("c", "j2")));
        let names = |job: &str| index.get("ns", job).iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(names("j1"), ["a", "b"]);
        // A changed key moves the object.
        feed(watcher::Event::Apply(pod("b", "j2")));
        assert_eq!((names("j1"), names("j2")), (vec!["a".to_string()], vec!["b".to_string(), "c".to_string()]));
        feed(watcher::Event::Delete(pod("a", "j1")));
        assert!(names("j1").is_empty());
        assert!(index.get("other", "j2").is_empty());
        // A relist replaces everything at its end, as the store does.
        feed(watcher::Event::Init);
        feed(watcher::Event::InitApply(pod("d", "j3")));
        assert_eq!(names("j2"), ["b", "c"], "the old picture stands until the relist is done");
        feed(watcher::Event::InitDone);
        assert!(names("j2").is_empty());
        assert_eq!(names("j3"), ["d"]);
    }

    #[test]
    fn expectations_wait_for_the_own_write_or_a_later_version_with_that_status() {
        let e = Expectations::<u32>::default();
        assert!(e.met("ns", "r", Some("1"), Some(&0)), "nothing written: nothing to wait for");
        e.wrote("ns", "r", Some("5".into()), Some(7));
        assert!(!e.met("ns", "r", Some("4"), Some(&6)), "the cache is older than the write");
        assert_eq!(e.len(), 1);
        assert!(e.met("ns", "r", Some("9"), Some(&7)), "a later version that kept the status");
        assert!(e.is_empty(), "met expectations are dropped");
        e.wrote("ns", "r", Some("10".into()), Some(8));
        assert!(e.met("ns", "r", Some("10"), Some(&1)));
        e.wrote("ns", "r", Some("11".into()), Some(9));
        e.forget("ns", "r");
        assert!(e.is_empty());
    }

    #[test]
    fn trimming_keeps_what_the_reconcilers_read() {
        let mut j = Job::default();
        j.metadata.name = Some("j".into());
        j.metadata.managed_fields = Some(vec![Default::default()]);
        j.metadata.annotations = Some([(LAST_APPLIED.to_string(), "{}".to_string()), ("k".into(), "v".into())].into());
        j.spec = Some(Default::default());
        j.status = Some(Default::default());
        trim_job(&mut j);
        assert_eq!((j.spec, j.metadata.managed_fields), (None, None));
        assert_eq!(j.metadata.annotations.unwrap().len(), 1);
        assert!(j.status.is_some());
    }
}
