//! The cluster map against a real etcd (Debian's `etcd-server`; CI installs it): each test
//! starts its own single-member etcd on free loopback ports in a temporary directory.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use etcdmap::{
    watch, watch_with_state, EtcdMap, EtcdMapError, EtcdSource, EtcdUser, LocalEtcd, MapNode, Snapshot,
    DEFAULT_PREFIX,
};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The bound the tests put on a watcher seeing a change (2 s in normal operation).
const WATCH_SEEN_MAX: Duration = Duration::from_secs(2);
/// After a restart of etcd: the watcher must first notice, then retry its connection.
const WATCH_SEEN_AFTER_RESTART_MAX: Duration = Duration::from_secs(10);

/// A local etcd in its own temporary directory.
struct Etcd {
    local: LocalEtcd,
    _dir: tempfile::TempDir,
}

impl Etcd {
    async fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("temporary directory");
        let local = LocalEtcd::start(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        Etcd { local, _dir: dir }
    }

    fn endpoints(&self) -> Vec<String> {
        self.local.endpoints()
    }

    async fn connect(&self) -> EtcdMap {
        EtcdMap::connect(&self.endpoints(), DEFAULT_PREFIX, REQUEST_TIMEOUT).await.expect("connect to etcd")
    }

    fn kill(&mut self) {
        self.local.kill();
    }

    async fn restart(&mut self) {
        self.local.restart().unwrap_or_else(|e| panic!("{e}"));
    }
}

fn node(id: u32, az: u16, spare: bool) -> MapNode {
    MapNode {
        id,
        az,
        name: format!("node-{id}"),
        listen: SocketAddr::from(([127, 0, 0, 1], 7000 + id as u16)),
        admin: Some(SocketAddr::from(([127, 0, 0, 1], 9000 + id as u16))),
        spare,
    }
}

/// Ids 1..=6, two per AZ 0, 1, 2, none spare.
fn six_nodes() -> Vec<MapNode> {
    (1..=6).map(|id| node(id, ((id - 1) / 2) as u16, false)).collect()
}

fn has_node(snapshot: &Snapshot, id: u32) -> bool {
    snapshot.nodes.iter().any(|n| n.id == id)
}

#[tokio::test]
async fn publish_then_load_returns_the_same_nodes_and_republishing_or_loading_an_empty_prefix_is_refused() {
    let etcd = Etcd::start().await;
    let mut map = etcd.connect().await;
    let published = map.publish(&six_nodes()).await.expect("publish");
    assert_eq!(published.generation, 1);

    let loaded = map.load().await.expect("load");
    assert_eq!(loaded.nodes, six_nodes());
    assert_eq!(loaded.generation, 1);
    assert_eq!(loaded, published, "a load right after publish reads at the publish revision");

    let again = map.publish(&six_nodes()).await;
    assert!(matches!(again, Err(EtcdMapError::AlreadyPublished { ref prefix }) if prefix == DEFAULT_PREFIX));

    let mut empty =
        EtcdMap::connect(&etcd.endpoints(), "/elsewhere", REQUEST_TIMEOUT).await.expect("connect");
    assert_eq!(empty.prefix(), "/elsewhere/");
    assert!(matches!(empty.load().await, Err(EtcdMapError::NoMap { ref prefix }) if prefix == "/elsewhere/"));
}

#[tokio::test]
async fn a_watcher_started_before_add_node_sees_the_spare_within_two_seconds() {
    let etcd = Etcd::start().await;
    let mut map = etcd.connect().await;
    let initial = map.publish(&six_nodes()).await.expect("publish");
    let mut rx = watch(EtcdSource::new(etcd.endpoints(), DEFAULT_PREFIX), initial.clone());
    // Let the watch be established, so the time measured is that of a change, not of a connect.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now();
    let added = map.add_node(node(7, 1, true)).await.expect("add a spare");
    let seen = tokio::time::timeout(WATCH_SEEN_MAX * 5, rx.wait_for(|s| has_node(s, 7)))
        .await
        .expect("the watcher sees the spare")
        .expect("watch task alive")
        .clone();
    let elapsed = start.elapsed();
    println!("watch latency: add_node to the watcher seeing the spare took {elapsed:?}");
    assert!(elapsed < WATCH_SEEN_MAX, "the watcher took {elapsed:?}");

    assert_eq!(added.generation, 2);
    assert_eq!(seen.generation, 2);
    assert_eq!(seen.nodes, added.nodes);
    let old = initial.cluster_map().expect("old map");
    old.check_change(&seen.cluster_map().expect("new map")).expect("the old map accepts the new one");
}

#[tokio::test]
async fn add_node_refuses_a_placed_node_and_a_duplicate_id_name_or_listen_address_and_writes_nothing() {
    let etcd = Etcd::start().await;
    let mut map = etcd.connect().await;
    let published = map.publish(&six_nodes()).await.expect("publish");

    let placed = map.add_node(node(7, 0, false)).await;
    assert!(matches!(placed, Err(EtcdMapError::NotSpare(7))), "{placed:?}");

    let same_id = node(3, 1, true);
    let mut same_name = node(8, 1, true);
    same_name.name = "node-2".into();
    let mut same_listen = node(9, 2, true);
    same_listen.listen = node(1, 0, false).listen;
    for duplicate in [same_id, same_name, same_listen] {
        let refused = map.add_node(duplicate.clone()).await;
        assert!(matches!(refused, Err(EtcdMapError::Duplicate(_))), "{duplicate:?}: {refused:?}");
    }

    let after = map.load().await.expect("load");
    assert_eq!(after, published, "nothing was written (same nodes, generation and revision)");
}

#[tokio::test]
async fn two_concurrent_add_node_calls_both_land() {
    let etcd = Etcd::start().await;
    let (mut first, mut second) = (etcd.connect().await, etcd.connect().await);
    first.publish(&six_nodes()).await.expect("publish");

    let (a, b) = tokio::join!(first.add_node(node(7, 0, true)), second.add_node(node(8, 2, true)));
    let (a, b) = (a.expect("first add_node"), b.expect("second add_node"));
    assert_ne!(a.generation, b.generation);

    let loaded = first.load().await.expect("load");
    assert_eq!(loaded.generation, 3);
    assert!(has_node(&loaded, 7) && has_node(&loaded, 8), "{loaded:?}");
    assert_eq!(loaded.nodes.len(), 8);
}

#[tokio::test]
async fn a_watcher_survives_etcd_being_killed_and_restarted_and_sees_a_node_added_after() {
    let mut etcd = Etcd::start().await;
    let initial = etcd.connect().await.publish(&six_nodes()).await.expect("publish");
    let (mut rx, mut state) = watch_with_state(EtcdSource::new(etcd.endpoints(), DEFAULT_PREFIX), initial);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(state.borrow().following, "following from the start");

    etcd.kill();
    // Long enough for the watcher to see its stream break and fail a few reconnects.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let broken = *state.borrow();
    assert!(!broken.following, "the watch state says the watch broke");
    etcd.restart().await;
    tokio::time::timeout(WATCH_SEEN_AFTER_RESTART_MAX, state.wait_for(|s| s.following))
        .await
        .expect("the watch follows again after the restart")
        .expect("watch task alive");
    assert!(state.borrow().since > broken.since);

    let start = Instant::now();
    etcd.connect().await.add_node(node(7, 2, true)).await.expect("add a spare after the restart");
    let seen = tokio::time::timeout(WATCH_SEEN_AFTER_RESTART_MAX, rx.wait_for(|s| has_node(s, 7)))
        .await
        .expect("the watcher sees the spare added after the restart")
        .expect("watch task alive")
        .clone();
    println!("after the restart, the watcher saw the spare in {:?}", start.elapsed());
    assert_eq!(seen.generation, 2);
}

#[tokio::test]
async fn connecting_to_an_endpoint_nobody_listens_on_fails_with_connect_naming_it() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoints = vec![format!("http://127.0.0.1:{port}")];
    let start = Instant::now();
    let result = EtcdMap::connect(&endpoints, DEFAULT_PREFIX, Duration::from_secs(1)).await;
    let elapsed = start.elapsed();
    match result {
        Err(error @ EtcdMapError::Connect { .. }) => {
            assert!(error.to_string().contains(&endpoints[0]), "{error}");
        }
        other => panic!("expected Connect, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(5), "connect took {elapsed:?}");
}

#[tokio::test]
async fn a_prefix_holding_only_a_stray_node_key_is_a_bad_map_and_refuses_publish() {
    let etcd = Etcd::start().await;
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None).await.expect("connect");
    let stray = serde_json::to_string(&node(1, 0, false)).expect("json");
    raw.put("/stray/nodes/0000000001", stray, None).await.expect("put a stray node key");

    let mut map = EtcdMap::connect(&etcd.endpoints(), "/stray/", REQUEST_TIMEOUT).await.expect("connect");
    match map.load().await {
        Err(EtcdMapError::BadEntry { key, .. }) => assert_eq!(key, "/stray/generation"),
        other => panic!("expected BadEntry for the missing generation, got {other:?}"),
    }
    let refused = map.publish(&six_nodes()).await;
    assert!(matches!(refused, Err(EtcdMapError::AlreadyPublished { .. })), "{refused:?}");
}

#[tokio::test]
async fn once_secured_the_client_user_reads_and_watches_only_the_node_user_claims_and_nobody_else_is_answered(
) {
    let etcd = Etcd::start().await;
    let mut open = etcd.connect().await;
    let initial = open.publish(&six_nodes()).await.expect("publish");
    let user = |name: &str| EtcdUser { name: name.into(), password: format!("{name}-secret") };
    let (node_user, client_user) = (user("borealis-node"), user("borealis-client"));
    open.secure("root-secret", &node_user, &client_user).await.expect("secure");
    let as_user =
        |user: Option<EtcdUser>| EtcdSource { user, ..EtcdSource::new(etcd.endpoints(), DEFAULT_PREFIX) };

    // The clients' user reads and watches the map, and may not write it.
    let mut client =
        EtcdMap::open(&as_user(Some(client_user.clone())), REQUEST_TIMEOUT).await.expect("client");
    assert_eq!(client.load().await.expect("client reads").nodes.len(), 6);
    let claim = client.claim_volume(5, "borealis://client/c").await;
    assert!(claim.as_ref().is_err_and(|e| e.to_string().contains("permission denied")), "{claim:?}");
    let added = client.add_node(node(7, 0, true)).await;
    assert!(added.is_err(), "the clients' user added a node: {added:?}");
    let mut rx = watch(as_user(Some(client_user)), initial);

    // Tokens expire after 2 s idle here (`LocalEtcd`): connections refresh them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(client.load().await.is_ok(), "the client's connection outlives its token");

    // The nodes' user claims a volume; the client's watch sees the ACL.
    let mut node_map = EtcdMap::open(&as_user(Some(node_user)), REQUEST_TIMEOUT).await.expect("node");
    let (acl, _) = node_map.claim_volume(5, "borealis://client/c").await.expect("the nodes' user claims");
    tokio::time::sleep(Duration::from_secs(3)).await;
    node_map.claim_volume(6, "borealis://client/c").await.expect("a node claims after its token expired");
    let grown = node_map.add_node(node(8, 1, true)).await;
    assert!(grown.is_err(), "the nodes' user may write only ACLs and tombstones: {grown:?}");
    assert!(acl.allows("borealis://client/c", etcdmap::Role::Admin));
    tokio::time::timeout(WATCH_SEEN_MAX, rx.wait_for(|s| s.acls.contains_key(&5)))
        .await
        .expect("the clients' watch sees the claim")
        .expect("watch task alive");

    // Root adds hosts; without a user, or with a wrong password, etcd answers nothing.
    let mut root = EtcdMap::open(&as_user(Some(user("root").with_password("root-secret"))), REQUEST_TIMEOUT)
        .await
        .expect("root");
    root.add_node(node(7, 0, true)).await.expect("root adds a spare");
    for nobody in [None, Some(user("borealis-node").with_password("wrong"))] {
        let answered = match EtcdMap::open(&as_user(nobody.clone()), REQUEST_TIMEOUT).await {
            Ok(mut map) => map.load().await.map(|_| ()),
            Err(error) => Err(error),
        };
        assert!(answered.is_err(), "etcd answered {nobody:?}");
    }
}

trait WithPassword {
    fn with_password(self, password: &str) -> Self;
}

impl WithPassword for EtcdUser {
    fn with_password(self, password: &str) -> EtcdUser {
        EtcdUser { password: password.into(), ..self }
    }
}

#[tokio::test]
async fn a_deleted_volume_is_never_claimed_again_and_its_tombstone_reaches_a_watcher() {
    let etcd = Etcd::start().await;
    let mut map = etcd.connect().await;
    let initial = map.publish(&six_nodes()).await.expect("publish");
    let mut rx = watch(EtcdSource::new(etcd.endpoints(), DEFAULT_PREFIX), initial);
    map.claim_volume(9, "borealis://client/a").await.expect("claim");
    assert!(map.delete_volume(9, "borealis://client/a").await.expect("delete"));
    assert!(!map.delete_volume(9, "borealis://client/a").await.expect("again"), "deleted already");
    assert!(map.delete_volume(10, "root").await.expect("delete an unclaimed volume"));
    for volume in [9, 10] {
        let claimed = map.claim_volume(volume, "borealis://client/b").await;
        assert!(matches!(claimed, Err(EtcdMapError::Deleted { volume: v }) if v == volume), "{claimed:?}");
    }
    let seen = tokio::time::timeout(WATCH_SEEN_MAX, rx.wait_for(|s| s.deleted.len() == 2))
        .await
        .expect("the watcher sees both tombstones")
        .expect("watch task alive")
        .clone();
    assert!(seen.deleted.contains(&9) && seen.deleted.contains(&10));
    assert!(seen.acls.contains_key(&9), "the ACL stays as a record");
}

#[tokio::test]
async fn an_acl_change_for_a_caller_is_checked_against_etcd_s_acl_in_the_same_transaction() {
    let etcd = Etcd::start().await;
    let mut map = etcd.connect().await;
    map.publish(&six_nodes()).await.expect("publish");
    let (alice, bob) = ("borealis://client/alice", "borealis://client/bob");
    map.claim_volume(3, alice).await.expect("claim");
    let (acl, _) = map
        .change_acl_as(3, alice, |acl| acl.grant(bob, etcdmap::Role::Admin))
        .await
        .expect("alice is admin");
    assert!(acl.allows(bob, etcdmap::Role::Admin));
    // bob takes alice's admin away; alice, checked against etcd and not a stale copy, can no
    // longer give it back to herself.
    map.change_acl_as(3, bob, |acl| acl.revoke(alice, etcdmap::Role::Admin)).await.expect("bob");
    let back = map.change_acl_as(3, alice, |acl| acl.grant(alice, etcdmap::Role::Admin)).await;
    assert!(matches!(back, Err(EtcdMapError::NotAdmin { .. })), "{back:?}");
    let orphan = map.change_acl_as(3, bob, |acl| acl.revoke(bob, etcdmap::Role::Admin)).await;
    assert!(matches!(orphan, Err(EtcdMapError::LastAdmin { .. })), "{orphan:?}");
    let unclaimed = map.change_acl_as(4, bob, |acl| acl.grant(alice, etcdmap::Role::Read)).await;
    assert!(matches!(unclaimed, Err(EtcdMapError::NoAcl { .. })), "{unclaimed:?}");
    assert!(matches!(map.delete_volume_as(3, alice).await, Err(EtcdMapError::NotAdmin { .. })));
    assert!(map.delete_volume_as(3, bob).await.expect("bob deletes"));
    assert!(!map.delete_volume_as(3, bob).await.expect("again"), "deleted already");
    let after = map.change_acl_as(3, bob, |acl| acl.grant(alice, etcdmap::Role::Read)).await;
    assert!(matches!(after, Err(EtcdMapError::Deleted { .. })), "{after:?}");
}

#[tokio::test]
async fn over_tls_the_map_is_read_and_watched_and_a_wrong_ca_or_no_client_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let leaves = [("etcd".to_owned(), vec!["127.0.0.1".parse().unwrap()]), ("node-1".to_owned(), vec![])];
    let pki = transport::create_cluster_pki(&dir.path().join("pki"), &leaves).expect("pki");
    let server = pki.files_for("etcd");
    let tls = etcdmap::ServerTls { cert: server.cert, key: server.key, client_ca: Some(pki.ca_cert.clone()) };
    let etcd = LocalEtcd::start_tls(&dir.path().join("etcd"), tls).unwrap_or_else(|e| panic!("{e}"));
    assert!(etcd.endpoint().starts_with("https://"));
    let client = pki.files_for("node-1");
    let over_tls = |tls| EtcdSource { tls, ..EtcdSource::new(etcd.endpoints(), DEFAULT_PREFIX) };
    let good = etcdmap::EtcdTls::from_files(&pki.ca_cert, Some((&client.cert, &client.key))).expect("files");
    let mut map =
        EtcdMap::open(&over_tls(Some(good.clone())), REQUEST_TIMEOUT).await.expect("connect over TLS");
    let initial = map.publish(&six_nodes()).await.expect("publish over TLS");
    let mut rx = watch(over_tls(Some(good)), initial);
    map.add_node(node(7, 0, true)).await.expect("add a spare over TLS");
    tokio::time::timeout(WATCH_SEEN_MAX, rx.wait_for(|s| has_node(s, 7)))
        .await
        .expect("the watch over TLS sees the spare")
        .expect("watch task alive");

    // Another CA's view of etcd, no client certificate, or plain HTTP: nothing is read.
    let other = transport::create_cluster_pki(&dir.path().join("other"), &leaves[1..]).expect("other pki");
    let other_node = other.files_for("node-1");
    let wrong_ca = etcdmap::EtcdTls::from_files(&other.ca_cert, Some((&other_node.cert, &other_node.key)));
    let no_identity = etcdmap::EtcdTls::from_files(&pki.ca_cert, None);
    for tls in [wrong_ca.expect("files"), no_identity.expect("files")] {
        let read = match EtcdMap::open(&over_tls(Some(tls.clone())), Duration::from_secs(2)).await {
            Ok(mut map) => map.load().await.map(|_| ()),
            Err(error) => Err(error),
        };
        assert!(read.is_err(), "etcd answered {tls:?}");
    }
}
