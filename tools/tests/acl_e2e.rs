//! Who may touch a volume (issue 18), with real processes: six nodes following the cluster map
//! and the volumes' ACLs in a real etcd, and the `borealis volume` command acting as three
//! clients whose certificates the cluster's CA signed. Each refusal is typed (`Unauthorized`),
//! changes nothing on the nodes, and is counted in `/metrics`.

mod heal;
mod support;

use std::time::Duration;

use heal::{metrics, segments};
use protocol::messages::{ErrorCode, GossipFetch, HydrateFetch};
use protocol::{Epochs, Lsn, LsnRange, Message, PageId, PgId, PgRef, VolumeId};
use support::etcd::EtcdCluster;
use tools::local::map::EtcdActor;
use tools::local::LocalCluster;

const VOLUME: u128 = 0xac1;

/// The segments' epochs, SCLs and highest LSNs on every node: what a refused writer must not
/// change.
fn footprint(cluster: &LocalCluster) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(footprint_async(cluster))
}

async fn footprint_async(cluster: &LocalCluster) -> Vec<String> {
    let mut all = Vec::new();
    for node in 1..=6 {
        for s in segments(cluster, node, VolumeId(VOLUME)).await {
            all.push(format!("{node} {:?} {:?} {} {}", s.pg, s.epochs, s.scl, s.highest_lsn));
        }
    }
    all
}

fn unauthorized_replies(admin: std::net::SocketAddr) -> f64 {
    let text = metrics(admin);
    text.lines()
        .find_map(|l| l.strip_prefix("borealis_error_replies_total{kind=\"unauthorized\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Sends `message` to node `node` as the client `name` and returns the reply.
fn raw(local: &LocalCluster, node: u32, name: &str, message: &Message) -> Message {
    let node = local.node(node).unwrap();
    let tls = local.client_tls_as(name);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let endpoint = transport::client_endpoint(
            transport::any_addr_for(node.addr),
            &tls,
            &transport::Tuning::default(),
        )
        .unwrap();
        let connection =
            transport::connect(&endpoint, node.addr, &node.name, Duration::from_secs(5)).await.unwrap();
        transport::framed::request(&connection, message).await.unwrap()
    })
}

#[test]
fn each_client_gets_only_what_the_volume_s_acl_grants_and_client_certificates_cannot_act_as_nodes() {
    let cluster = EtcdCluster::start_with_auth(6);
    for name in ["alice", "bob", "mallory", "carol", "dave"] {
        let issued = cluster.borealis(&["cert", "issue", "--name", name]);
        assert!(issued.code == Some(0), "{issued:?}");
    }
    let volume = format!("{VOLUME:#x}");
    let as_ = |name: &str, args: &[&str]| {
        let mut all = vec!["volume", "--as", name];
        all.extend(args);
        cluster.borealis(&all)
    };
    let local = LocalCluster::load(&cluster.out).unwrap();

    // alice claims the volume and writes a file to it.
    let created = as_("alice", &["create", "--volume", &volume]);
    assert!(
        created.code == Some(0) && created.stdout.contains("borealis://client/alice: admin"),
        "{created:?}"
    );
    let data: Vec<u8> = (0..5 * 4096u32).map(|i| (i % 251) as u8).collect();
    let file = cluster.root.path().join("data.bin");
    std::fs::write(&file, &data).unwrap();
    let wrote = as_("alice", &["write", "--volume", &volume, "--file", file.to_str().unwrap()]);
    assert!(wrote.code == Some(0) && wrote.stdout.contains("wrote 5 pages"), "{wrote:?}");
    let before = footprint(&local);
    assert!(!before.is_empty(), "alice's records are on the nodes");

    // bob has no role: his write is refused, typed, and changes nothing.
    let refused = as_("bob", &["write", "--volume", &volume, "--file", file.to_str().unwrap()]);
    assert!(refused.code != Some(0) && refused.stderr.contains("Unauthorized"), "{refused:?}");
    assert!(refused.stderr.contains("borealis://client/bob has no write"), "{refused:?}");
    println!("bob's write: {}", refused.stderr.trim());
    let self_grant = as_("bob", &["grant", "--volume", &volume, "--to", "bob", "--role", "write"]);
    // The node refuses it (a volume's ACL changes through the nodes, which check `admin`).
    assert!(
        self_grant.code != Some(0)
            && self_grant.stderr.contains("Unauthorized")
            && self_grant.stderr.contains("borealis://client/bob has no admin"),
        "{self_grant:?}"
    );
    let orphaning = as_("alice", &["revoke", "--volume", &volume, "--to", "alice", "--role", "admin"]);
    assert!(orphaning.code != Some(0) && orphaning.stderr.contains("without an admin"), "{orphaning:?}");
    let read_refused = as_("bob", &["read", "--volume", &volume, "--count", "5"]);
    assert!(read_refused.code != Some(0) && read_refused.stderr.contains("Unauthorized"), "{read_refused:?}");

    // Granted read, bob reads what alice wrote, and still may not write.
    let granted = cluster.borealis(&[
        "volume", "--as", "alice", "grant", "--volume", &volume, "--to", "bob", "--role", "read",
    ]);
    assert!(granted.code == Some(0) && granted.stdout.contains("borealis://client/bob: read"), "{granted:?}");
    let out = cluster.root.path().join("read.bin");
    let read = as_("bob", &["read", "--volume", &volume, "--count", "5", "--out", out.to_str().unwrap()]);
    assert!(read.code == Some(0), "{read:?}");
    assert_eq!(std::fs::read(&out).unwrap(), data, "bob reads alice's pages");
    let still = as_("bob", &["write", "--volume", &volume, "--file", file.to_str().unwrap()]);
    assert!(still.code != Some(0) && still.stderr.contains("Unauthorized"), "{still:?}");

    // mallory, signed by the same CA, reads nothing.
    let mallory = as_("mallory", &["read", "--volume", &volume, "--count", "1"]);
    assert!(mallory.code != Some(0) && mallory.stderr.contains("Unauthorized"), "{mallory:?}");

    // Revoked, bob reads nothing again.
    let revoked = as_("alice", &["revoke", "--volume", &volume, "--to", "bob", "--role", "read"]);
    assert!(revoked.code == Some(0) && !revoked.stdout.contains("bob"), "{revoked:?}");
    let after_revoke = as_("bob", &["read", "--volume", &volume, "--count", "1"]);
    assert!(after_revoke.code != Some(0) && after_revoke.stderr.contains("Unauthorized"), "{after_revoke:?}");
    assert_eq!(footprint(&local), before, "no refused request changed a segment");

    // A client certificate may not act as a node: gossip and hydration are refused.
    let node = local.node(1).unwrap();
    let pg = PgRef { volume_id: VolumeId(VOLUME), pg_id: PgId(0) };
    let hydrate = Message::HydrateFetch(HydrateFetch {
        pg,
        epochs: Epochs::default(),
        read_lsn: Lsn(1),
        from_page: PageId(0),
        bytes_max: 1 << 20,
    });
    let fetch = Message::GossipFetch(GossipFetch {
        pg,
        epochs: Epochs::default(),
        ranges: vec![LsnRange::new(Lsn(0), Lsn(100)).unwrap()],
        bytes_max: 1 << 20,
    });
    // The nodes themselves refuse a writer's request from a certificate the ACL gives no
    // write, whatever the client does.
    let bump = Message::EpochBump(protocol::messages::EpochBump { pg, epochs: Epochs::default() });
    match raw(&local, 1, "mallory", &bump) {
        Message::Error(refusal) => {
            assert_eq!(refusal.code, ErrorCode::Unauthorized, "{refusal:?}");
            assert!(refusal.message.contains("borealis://client/mallory has no write"), "{refusal:?}");
        }
        other => panic!("the node took a write from a certificate without write: {other:?}"),
    }
    for ask in [hydrate, fetch] {
        match raw(&local, 1, "mallory", &ask) {
            Message::Error(refusal) => {
                assert_eq!(refusal.code, ErrorCode::Unauthorized, "{refusal:?}");
                assert!(refusal.message.contains("only the cluster's nodes"), "{refusal:?}");
            }
            other => panic!("a client certificate was answered as a node: {other:?}"),
        }
    }
    assert!(unauthorized_replies(node.admin) >= 3.0, "refusals are counted by kind in /metrics");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    // Asking a node for a cluster change takes an administrator's certificate (`init --etcd`
    // made the cluster's client certificate one); the admin port itself only reads.
    let denied = cluster.borealis(&["cluster", "replace-node", "3", "--via-node", "1", "--as", "mallory"]);
    assert!(denied.code != Some(0) && denied.stderr.contains("Unauthorized"), "{denied:?}");
    assert!(denied.stderr.contains("borealis://client/mallory is not a cluster administrator"), "{denied:?}");
    let allowed = cluster.borealis(&["cluster", "replace-node", "3", "--via-node", "1"]);
    assert!(allowed.code == Some(0) && allowed.stdout.contains("took the request"), "{allowed:?}");

    // A stale-epoch writer: alice's first writer is fenced by her second (a new volume epoch);
    // its appends are refused as `Fenced` (the nodes answer `StaleEpoch`) and change nothing.
    runtime.block_on(async {
        let mut config = local.client_config().unwrap();
        config.tls = local.client_tls_as("alice");
        config.replace_after = None;
        let geometry = client::VolumeGeometry::new(
            VolumeId(VOLUME),
            tools::volume::PAGE_BYTES,
            tools::volume::PAGES_PER_PG,
        )
        .unwrap();
        let first = client::Writer::open(config.clone(), geometry).await.unwrap();
        let second = client::Writer::open(config, geometry).await.unwrap();
        let marker = |text: &str| client::NewRecord {
            page: PageId(9),
            kind: protocol::RecordKind::Marker,
            payload: text.as_bytes().to_vec().into(),
            cpl: true,
            lsn: None,
        };
        second.append(vec![marker("second")]).await.unwrap().durable().await.unwrap();
        let settled = footprint_async(&local).await;
        let stale = match first.append(vec![marker("stale")]).await {
            Ok(appended) => appended.durable().await.map(|_| ()),
            Err(error) => Err(error),
        };
        assert_eq!(stale, Err(client::AppendError::Fenced), "the stale writer is refused");
        assert_eq!(footprint_async(&local).await, settled, "the stale writer changed nothing");
        second.close().await;
    });

    // A writer claims nothing itself (clients only read etcd): carol opens a volume nobody
    // created, and the first node asked to write it claims it for her. dave, without a role,
    // cannot open it; granted write he can, and once his write is revoked his next append fails
    // as `Unauthorized` (not by timing out).
    runtime.block_on(async {
        let geometry = client::VolumeGeometry::new(
            VolumeId(VOLUME + 1),
            tools::volume::PAGE_BYTES,
            tools::volume::PAGES_PER_PG,
        )
        .unwrap();
        let as_ = |name: &str| {
            let mut config = local.client_config().unwrap();
            config.tls = local.client_tls_as(name);
            config.replace_after = None;
            config
        };
        let record = |page: u64| client::NewRecord {
            page: PageId(page),
            kind: protocol::RecordKind::Marker,
            payload: bytes::Bytes::from_static(b"claimed"),
            cpl: true,
            lsn: None,
        };
        let carol = client::Writer::open(as_("carol"), geometry).await.unwrap();
        carol.append(vec![record(1)]).await.unwrap().durable().await.unwrap();
        let source = |actor| local.etcd_source(actor).unwrap().expect("the map is in etcd");
        let mut etcd =
            etcdmap::EtcdMap::open(&source(EtcdActor::Root), Duration::from_secs(5)).await.unwrap();
        // etcd's authentication is on (`init --etcd-auth`): the clients' etcd user reads the map
        // and ACLs but cannot change them, and without a user nothing is read.
        let mut as_client =
            etcdmap::EtcdMap::open(&source(EtcdActor::Client), Duration::from_secs(5)).await.unwrap();
        assert!(as_client.load().await.is_ok(), "the clients' etcd user reads the map");
        let grab =
            as_client.change_acl(VOLUME + 1, |acl| acl.grant("borealis://client/dave", etcdmap::Role::Admin));
        let denied = grab.await.expect_err("the clients' etcd user changed an ACL");
        assert!(denied.to_string().contains("permission denied"), "{denied}");
        let squat = as_client.claim_volume(VOLUME + 2, "borealis://client/dave").await;
        assert!(squat.is_err(), "the clients' etcd user claimed a volume: {squat:?}");
        // (etcd speaks TLS here, so this source keeps the CA and drops only the user.)
        let anonymous = etcdmap::EtcdSource { user: None, ..source(EtcdActor::Client) };
        assert!(anonymous.endpoints[0].starts_with("https://"), "etcd speaks TLS");
        let nobody = match etcdmap::EtcdMap::open(&anonymous, Duration::from_secs(5)).await {
            Ok(mut map) => map.load().await.map(|_| ()),
            Err(error) => Err(error),
        };
        assert!(nobody.is_err(), "etcd answered without a user");
        let (acl, _) = etcd.acl(VOLUME + 1).await.unwrap().expect("the nodes claimed the volume");
        assert!(acl.allows("borealis://client/carol", etcdmap::Role::Admin), "{acl:?}");
        match client::Writer::open(as_("dave"), geometry).await {
            Err(client::OpenError::Unauthorized { detail, .. }) => {
                assert!(detail.contains("borealis://client/dave has no"), "{detail}")
            }
            Err(other) => panic!("dave's open failed otherwise: {other}"),
            Ok(_) => panic!("dave opened a volume he has no role on"),
        }
        etcd.change_acl(VOLUME + 1, |acl| acl.grant("borealis://client/dave", etcdmap::Role::Write))
            .await
            .unwrap();
        let dave = client::Writer::open(as_("dave"), geometry).await.unwrap();
        dave.append(vec![record(2)]).await.unwrap().durable().await.unwrap();
        etcd.change_acl(VOLUME + 1, |acl| acl.revoke("borealis://client/dave", etcdmap::Role::Write))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let revoked = loop {
            let attempt = match dave.append(vec![record(3)]).await {
                Ok(appended) => appended.durable().await.map(|_| ()),
                Err(error) => Err(error),
            };
            // An append made before the nodes saw the revoke may still become durable.
            if attempt.is_err() || started.elapsed() > Duration::from_secs(10) {
                break attempt;
            }
        };
        assert_eq!(revoked, Err(client::AppendError::Unauthorized), "after {:?}", started.elapsed());
        println!("a revoked writer's append failed as Unauthorized after {:?}", started.elapsed());
        drop(carol);
    });

    // `ls` shows the volume and its owner.
    let listed = cluster.borealis(&["volume", "ls"]);
    assert!(listed.code == Some(0), "{listed:?}");
    assert!(
        listed.stdout.contains(&format!("volume {volume}: "))
            && listed.stdout.contains("admin: borealis://client/alice"),
        "{listed:?}"
    );

    // alice still reads everything.
    let alice = as_("alice", &["read", "--volume", &volume, "--count", "5", "--out", out.to_str().unwrap()]);
    assert!(alice.code == Some(0), "{alice:?}");
    assert_eq!(std::fs::read(&out).unwrap(), data);
    // A reader's floor report only holds the floor: once every writer's report has expired
    // (10 s leases), mallory, granted read, still cannot push it up (which would make other
    // readers' reads too old); before the fix her report alone moved it.
    let granted = cluster.borealis(&[
        "volume", "--as", "alice", "grant", "--volume", &volume, "--to", "mallory", "--role", "read",
    ]);
    assert!(granted.code == Some(0), "{granted:?}");
    std::thread::sleep(Duration::from_secs(11)); // the client's FLOOR_LEASE_MS is 10 s
    let report = Message::FloorReport(protocol::messages::FloorReport {
        pg: PgRef { volume_id: VolumeId(VOLUME), pg_id: PgId(0) },
        client: 42,
        floor: Lsn(1 << 40),
        lease_ms: 60_000,
    });
    match raw(&local, 1, "mallory", &report) {
        Message::FloorAck(ack) => assert!(ack.floor < Lsn(1 << 40), "a reader raised the floor: {ack:?}"),
        other => panic!("mallory's floor report: {other:?}"),
    }
}
